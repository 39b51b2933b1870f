#include <pybind11/pybind11.h>

#include "m2f/device_query.hpp"
#ifdef M2F_WITH_TENSORRT
#include "tensorrt/trt_runner.hpp"
#endif

namespace py = pybind11;

#ifndef M2F_VERSION
#define M2F_VERSION "0.0.0"
#endif

namespace m2f::bind {

void bind_build_info(py::module_& m) {
  m.def(
      "build_info",
      []() {
        py::dict info;
        info["version"] = M2F_VERSION;
#ifdef M2F_WITH_CUDA
        info["cuda"] = true;
        info["cuda_version"] = M2F_CUDA_VERSION;
#else
        info["cuda"] = false;
        info["cuda_version"] = py::none();
#endif
#ifdef M2F_CUDA_EMULATION
        // a test build whose kernels run on the CPU (M2F_CUDA=EMULATE), never a product build
        info["cuda_emulation"] = true;
#else
        info["cuda_emulation"] = false;
#endif
#ifdef M2F_WITH_TENSORRT
        info["tensorrt"] = true;
        info["tensorrt_version"] = M2F_TENSORRT_VERSION;
        // what the process loaded, which may not be what the core was built against
        info["tensorrt_runtime_version"] = trt::runtime_version();
        const std::string library = trt::runtime_library();
        info["tensorrt_library"] = library.empty() ? py::object(py::none()) : py::object(py::str(library));
#else
        info["tensorrt"] = false;
        info["tensorrt_version"] = py::none();
        info["tensorrt_runtime_version"] = py::none();
        info["tensorrt_library"] = py::none();
#endif
#ifdef M2F_TENSORRT_STANDIN
        info["tensorrt_standin"] = true;  // the emulation build's TensorRT stand-in, never a product build
#else
        info["tensorrt_standin"] = false;
#endif
        GpuInfo gpu;
        {
          py::gil_scoped_release release;
          gpu = query_gpu();
        }
        info["gpu_present"] = gpu.present;
        info["gpu_count"] = gpu.device_count;
        info["gpu_name"] = gpu.present ? py::object(py::str(gpu.name)) : py::object(py::none());
        info["gpu_compute_capability"] =
            gpu.present ? py::object(py::make_tuple(gpu.compute_major, gpu.compute_minor)) : py::object(py::none());
        info["gpu_integrated"] = gpu.integrated;
        info["gpu_error"] = gpu.error.empty() ? py::object(py::none()) : py::object(py::str(gpu.error));
        return info;
      },
      "What the core was built with (version, CUDA, TensorRT) and whether a GPU is usable now.");
}

}  // namespace m2f::bind

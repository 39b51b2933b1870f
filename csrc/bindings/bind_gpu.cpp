// m2f_edge._core.gpu: the GPU twins of preprocess / postprocess / instance_map, the DeviceArray
// buffer type and stream helpers. In a build without CUDA the same names exist and raise.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "m2f/device_query.hpp"

#ifdef M2F_WITH_CUDA
#include "bindings/array_view.hpp"
#include "bindings/cuda_array.hpp"
#include "bindings/frame_views.hpp"
#include "m2f/cuda/ops.hpp"
#include "m2f/cuda/workspace_pool.hpp"
#endif

namespace py = pybind11;

namespace m2f::bind {
namespace {

#ifdef M2F_WITH_CUDA

// A GPU view of `obj`; a numpy array is first copied into a new device array (kept alive by the
// returned borrow). The copy is synchronous and is the only copy these functions make of inputs.
BorrowedView device_input(const py::handle& obj, const char* arg, cudaStream_t stream) {
  if (is_gpu_array(obj)) return gpu_view_of(obj, arg, stream);
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string("argument '") + arg + "': expected a GPU array or a numpy array, got " +
                         py::str(py::type::handle_of(obj)).cast<std::string>());
  py::array host = py::array::ensure(obj, py::array::c_style);
  TensorView hv = view_of(host, arg);
  std::vector<std::int64_t> shape(hv.shape.begin(), hv.shape.begin() + hv.ndim);
  auto device = std::make_shared<DeviceArray>(shape, hv.dtype, false);
  if (device->nbytes() > 0)
    M2F_CUDA_CHECK(cudaMemcpyAsync(device->device_pointer(), host.data(), device->nbytes(), cudaMemcpyHostToDevice,
                                   stream));
  BorrowedView out;
  out.view = device->view();
  out.keep_alive = device;
  out.copied_from_host = true;
  return out;
}

std::vector<std::int64_t> shape_of(const TensorView& v) { return std::vector<std::int64_t>(v.shape.begin(), v.shape.begin() + v.ndim); }

// One post-processing call on a leased workspace (m2f/cuda/workspace_pool.hpp): enqueue, then the
// results in the form asked for. A failed call waits for its stream, without the interpreter lock,
// before the workspace goes back to the pool.
template <typename Enqueue>
py::dict leased_postprocess(cudaStream_t stream, const std::string& masks_to, Enqueue&& enqueue) {
  cuda::WorkspaceLease lease(stream);
  try {
    {
      py::gil_scoped_release release;
      enqueue(lease.get());
    }
    py::dict result = results_to_python(lease.get(), stream, masks_to);
    lease.finished();
    return result;
  } catch (...) {
    {
      py::gil_scoped_release release;
      lease.wait_for_stream();
    }
    throw;
  }
}

// Host <-> device copies outside the kernels' streams: cudaMemcpy from pageable memory may return
// before its DMA lands (and the legacy stream does not order non-blocking streams), so every
// such copy is made on one stream and waited for.
void copy_and_wait(void* dst, const void* src, std::size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  M2F_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
}

DType parse_dtype(const py::object& dtype) {
  return dtype_from_numpy(py::dtype::from_args(dtype), "dtype");
}

// Out of GPU memory is a MemoryError (callers may retry smaller); every other CUDA error a RuntimeError.
void bind_cuda_errors() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CudaError& e) {
      PyErr_SetString(e.out_of_memory() ? PyExc_MemoryError : PyExc_RuntimeError, e.what());
    }
  });
}

void bind_device_array(py::module_& g) {
  py::class_<DeviceArray, std::shared_ptr<DeviceArray>>(
      g, "DeviceArray",
      "C-contiguous GPU memory with __cuda_array_interface__ (CuPy, PyTorch and Numba read it without a copy).\n"
      "memory='device' allocates device memory; 'mapped' allocates page-locked host memory mapped into the\n"
      "GPU (zero-copy on integrated GPUs such as Jetson: write it through .numpy(), the GPU reads the same\n"
      "bytes); 'auto' picks 'mapped' on integrated GPUs that can map host memory, else 'device'.")
      .def(py::init([](std::vector<std::int64_t> shape, const py::object& dtype, const std::string& memory) {
             // --- types
             DType dt = parse_dtype(dtype);
             bool mapped = false;
             if (memory == "mapped") {
               mapped = true;
             } else if (memory == "auto") {
               GpuInfo info = query_gpu();
               mapped = info.present && info.integrated && info.can_map_host_memory;
             } else if (memory != "device") {
               throw py::value_error("argument 'memory': expected 'device', 'mapped' or 'auto', got '" + memory + "'");
             }
             return std::make_shared<DeviceArray>(std::move(shape), dt, mapped);
           }),
           py::arg("shape"), py::arg("dtype") = "float32", py::arg("memory") = "device")
      .def_static(
          "from_numpy",
          [](const py::array& host, const std::string& memory) {
            py::array contiguous = py::array::ensure(host, py::array::c_style);
            TensorView hv = view_of(contiguous, "array");
            bool mapped = memory == "mapped";
            if (memory == "auto") {
              GpuInfo info = query_gpu();
              mapped = info.present && info.integrated && info.can_map_host_memory;
            }
            auto device = std::make_shared<DeviceArray>(shape_of(hv), hv.dtype, mapped);
            const void* src = contiguous.data();
            {
              py::gil_scoped_release release;
              copy_and_wait(device->device_pointer(), src, device->nbytes(), nullptr);
            }
            return device;
          },
          py::arg("array"), py::arg("memory") = "device",
          "A GPU copy of a numpy array (complete when this returns: any stream may read it).")
      .def_property_readonly("shape",
                             [](const DeviceArray& a) {
                               py::tuple t(a.shape().size());
                               for (std::size_t i = 0; i < a.shape().size(); ++i) t[i] = a.shape()[i];
                               return t;
                             })
      .def_property_readonly("dtype", [](const DeviceArray& a) { return py::dtype(typestr_of(a.dtype())); })
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def_property_readonly("mapped", &DeviceArray::mapped)
      .def_property_readonly("ptr", [](const DeviceArray& a) { return reinterpret_cast<std::uintptr_t>(a.device_pointer()); })
      .def_property_readonly("__cuda_array_interface__", &cuda_array_interface)
      .def(
          "numpy",
          [](py::object self) {
            const auto& a = self.cast<const DeviceArray&>();
            if (!a.mapped())
              throw py::value_error("numpy(): only memory='mapped' arrays have a host view; use to_numpy() to copy");
            std::vector<py::ssize_t> shape(a.shape().begin(), a.shape().end());
            return py::array(py::dtype(typestr_of(a.dtype())), shape, a.host_pointer(), self);
          },
          "The host view of a mapped array (no copy; the array stays alive while the view does).")
      .def(
          "copy_from",
          [](DeviceArray& a, const py::array& host, const py::object& stream_obj) {
            py::array contiguous = py::array::ensure(host, py::array::c_style);
            TensorView hv = view_of(contiguous, "array");
            // --- types
            if (hv.dtype != a.dtype())
              throw py::type_error(std::string("argument 'array': expected dtype ") + dtype_name(a.dtype()) + ", got " +
                                   dtype_name(hv.dtype));
            // --- sizes
            if (shape_of(hv) != a.shape())
              throw py::value_error("argument 'array': expected shape " + shape_string(a.view()) + ", got " +
                                    shape_string(hv));
            if (a.nbytes() == 0) return;
            const void* src = contiguous.data();
            const bool ordered = !stream_obj.is_none();
            cudaStream_t stream = stream_from(stream_obj);
            py::gil_scoped_release release;
            // Without a stream, kernels still reading the old contents on any stream must end first.
            if (!ordered) M2F_CUDA_CHECK(cudaDeviceSynchronize());
            copy_and_wait(a.device_pointer(), src, a.nbytes(), stream);
          },
          py::arg("array"), py::kw_only(), py::arg("stream") = py::none(),
          "Copies a numpy array of the same shape and dtype in; complete when this returns. With stream=,\n"
          "the copy is ordered after the work already on that stream; without, after all work on the device.")
      .def(
          "to_numpy",
          [](const DeviceArray& a, const py::object& stream_obj) {
            std::vector<py::ssize_t> shape(a.shape().begin(), a.shape().end());
            py::array out(py::dtype(typestr_of(a.dtype())), shape);
            if (a.nbytes() > 0) {
              const bool ordered = !stream_obj.is_none();
              cudaStream_t stream = stream_from(stream_obj);
              void* dst = out.mutable_data();
              py::gil_scoped_release release;
              // cudaMemcpy alone would not wait for kernels on non-blocking streams (m2f_edge's own).
              if (!ordered) M2F_CUDA_CHECK(cudaDeviceSynchronize());
              copy_and_wait(dst, a.device_pointer(), a.nbytes(), stream);
            }
            return out;
          },
          py::kw_only(), py::arg("stream") = py::none(),
          "A host copy. Without stream= it waits for all work on the device first; with stream= it is\n"
          "ordered after the work on that stream only.")
      .def("__repr__", [](const DeviceArray& a) {
        std::string s = "DeviceArray(shape=(";
        for (std::size_t i = 0; i < a.shape().size(); ++i) s += (i ? ", " : "") + std::to_string(a.shape()[i]);
        return s + (a.shape().size() == 1 ? ",)" : ")") + ", dtype=" + dtype_name(a.dtype()) +
               (a.mapped() ? ", memory='mapped')" : ")");
      });
}

// Streams, device-wide synchronisation and copies between GPU arrays.
void bind_streams_and_copies(py::module_& g) {
  py::class_<cuda::Stream>(g, "Stream", "A non-blocking CUDA stream owned by m2f_edge.")
      .def(py::init([]() { return cuda::Stream::create(); }))
      .def_property_readonly("handle", [](const cuda::Stream& s) { return reinterpret_cast<std::uintptr_t>(s.get()); })
      .def("synchronize", [](const cuda::Stream& s) {
        py::gil_scoped_release release;
        s.synchronize();
      });

  g.def("synchronize", []() {
    py::gil_scoped_release release;
    M2F_CUDA_CHECK(cudaDeviceSynchronize());
  }, "Waits for all work on the current device.");

  g.def(
      "copy",
      [](const py::object& dst, const py::object& src, const py::object& stream_obj, bool synchronize) {
        cudaStream_t stream = stream_from(stream_obj);
        BorrowedView d = gpu_view_of(dst, "dst", stream);
        BorrowedView s = gpu_view_of(src, "src", stream);
        // --- sizes
        const std::size_t bytes = static_cast<std::size_t>(s.view.numel()) * dtype_size(s.view.dtype);
        if (!d.view.is_contiguous() || !s.view.is_contiguous() ||
            bytes != static_cast<std::size_t>(d.view.numel()) * dtype_size(d.view.dtype))
          throw py::value_error("copy: 'dst' and 'src' must be C-contiguous with the same number of bytes");
        py::gil_scoped_release release;
        M2F_CUDA_CHECK(cudaMemcpyAsync(d.view.data, s.view.data, bytes, cudaMemcpyDefault, stream));
        // A DLPack borrow is released (its deleter called) on return: the copy must be done by then.
        if (synchronize || d.from_dlpack || s.from_dlpack) M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
      },
      py::arg("dst"), py::arg("src"), py::kw_only(), py::arg("stream") = py::none(), py::arg("synchronize") = true,
      "Asynchronous copy between contiguous GPU arrays or mapped host buffers (DeviceArray memory='mapped'\n"
      "is pinned: a copy from it is a true async DMA). Also the copy-bandwidth yardstick of the benchmarks.");
}

void bind_preprocess_gpu(py::module_& g) {
  g.def(
      "preprocess",
      [](const py::object& frames, const py::object& out, const std::string& color, const std::string& resize,
         std::array<float, 3> mean, std::array<float, 3> stddev, const py::object& stream_obj, bool synchronize) {
        cudaStream_t stream = stream_from(stream_obj);
        PreprocessOptions options;
        // --- types
        options.color = parse_color_order(color);
        options.resize = parse_resize_mode(resize);
        options.mean = mean;
        options.stddev = stddev;
        // --- sizes: a list of frames, or one array (H, W), (H, W, C) or (B, H, W, C)
        FrameViews in = frame_views(frames, [&](const py::handle& f) { return device_input(f, "frames", stream); });
        const std::vector<BorrowedView>& borrowed = in.borrowed;
        const std::vector<TensorView>& views = in.frames;
        BorrowedView out_view = gpu_view_of(out, "out", stream);
        // Inputs this call borrowed through DLPack or copied from the host are released on return:
        // the kernels must have read them by then.
        bool must_wait = synchronize || out_view.from_dlpack;
        for (const auto& b : borrowed) must_wait = must_wait || b.from_dlpack || b.copied_from_host;
        std::vector<ResizeTransform> transforms;
        {
          py::gil_scoped_release release;
          transforms = cuda::preprocess(views, out_view.view, options, stream);
          if (must_wait) M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
        }
        return transforms;
      },
      py::arg("frames"), py::arg("out"), py::kw_only(), py::arg("color") = "bgr", py::arg("resize") = "stretch",
      py::arg("mean") = std::array<float, 3>{0.485f, 0.456f, 0.406f},
      py::arg("std") = std::array<float, 3>{0.229f, 0.224f, 0.225f}, py::arg("stream") = py::none(),
      py::arg("synchronize") = true,
      "GPU twin of _core.preprocess. frames: GPU arrays (__cuda_array_interface__ / DLPack, read in place,\n"
      "any strides) or numpy arrays (copied to the GPU first); out: a GPU array (B, 3, H, W) float32/float16.\n"
      "Returns one ResizeTransform per frame.");
}

void bind_postprocess_gpu(py::module_& g) {
  g.def(
      "postprocess_deployable",
      [](const py::object& masks, const py::object& scores, const py::object& classes,
                                const ResizeTransform& transform, float score_threshold, int max_instances,
                                const py::object& stream_obj, const std::string& masks_to) {
        check_masks_to(masks_to);
        cudaStream_t stream = stream_from(stream_obj);
        BorrowedView m = device_input(masks, "masks", stream);
        BorrowedView s = device_input(scores, "scores", stream);
        BorrowedView c = device_input(classes, "classes", stream);
        SelectionOptions options;
        options.score_threshold = score_threshold;
        options.max_instances = max_instances;
        return leased_postprocess(stream, masks_to, [&](cuda::PostprocessWorkspace& w) {
          cuda::enqueue_postprocess_deployable(m.view, s.view, c.view, transform, options, w, stream);
        });
      },
      py::arg("masks"), py::arg("scores"), py::arg("classes"), py::arg("transform"), py::kw_only(),
      py::arg("score_threshold") = 0.5f, py::arg("max_instances") = 100, py::arg("stream") = py::none(),
      py::arg("masks_to") = "host",
      "GPU twin of _core.postprocess_deployable: inputs stay on the GPU (a numpy input is copied there);\n"
      "each kept mask is computed inside its box only, and only those crops and the small arrays are\n"
      "copied back, into new arrays (the CPU twin's dict). masks_to: 'host' (numpy crops), 'packed'\n"
      "(numpy crops_packed, 8 pixels a byte) or 'device' (crops as a DeviceArray left on the GPU).");

  g.def(
      "postprocess_raw",
      [](const py::object& class_logits, const py::object& mask_logits,
                                const ResizeTransform& transform, int no_object_index, int topk, float score_threshold,
                                int max_instances, const py::object& stream_obj, const std::string& masks_to) {
        check_masks_to(masks_to);
        cudaStream_t stream = stream_from(stream_obj);
        BorrowedView cl = device_input(class_logits, "class_logits", stream);
        BorrowedView ml = device_input(mask_logits, "mask_logits", stream);
        RawHeadOptions raw;
        raw.no_object_index = no_object_index;
        raw.topk = topk;
        SelectionOptions options;
        options.score_threshold = score_threshold;
        options.max_instances = max_instances;
        return leased_postprocess(stream, masks_to, [&](cuda::PostprocessWorkspace& w) {
          cuda::enqueue_postprocess_raw(cl.view, ml.view, transform, raw, options, w, stream);
        });
      },
      py::arg("class_logits"), py::arg("mask_logits"), py::arg("transform"), py::kw_only(),
      py::arg("no_object_index") = 0, py::arg("topk") = 100, py::arg("score_threshold") = 0.5f,
      py::arg("max_instances") = 100, py::arg("stream") = py::none(), py::arg("masks_to") = "host",
      "GPU twin of _core.postprocess_raw: softmax, top-k over Q*C, fused upsample + sigmoid-sum scoring\n"
      "and the frame masks of the kept instances, all on the GPU; results copied into new arrays\n"
      "(masks_to as in postprocess_deployable).");
}

void bind_mask_ops_gpu(py::module_& g) {
  g.def(
      "instance_map",
      [](const py::object& masks, const py::object& stream_obj) {
        cudaStream_t stream = stream_from(stream_obj);
        BorrowedView m = device_input(masks, "masks", stream);
        // --- sizes
        if (m.view.ndim != 3) throw py::value_error("argument 'masks': expected (N, H, W), got " + shape_string(m.view));
        auto out = std::make_shared<DeviceArray>(std::vector<std::int64_t>{m.view.shape[1], m.view.shape[2]},
                                                 DType::int32, false);
        {
          py::gil_scoped_release release;
          cuda::instance_map(m.view, out->view(), stream);
          M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
        }
        return out;
      },
      py::arg("masks"), py::kw_only(), py::arg("stream") = py::none(),
      "GPU twin of _core.instance_map; returns a DeviceArray (H, W) int32.");

  g.def(
      "pack_masks",
      [](const py::object& masks, const py::object& stream_obj) {
        cudaStream_t stream = stream_from(stream_obj);
        BorrowedView m = device_input(masks, "masks", stream);
        if (m.view.ndim != 3) throw py::value_error("argument 'masks': expected (N, H, W), got " + shape_string(m.view));
        auto out = std::make_shared<DeviceArray>(
            std::vector<std::int64_t>{m.view.shape[0], m.view.shape[1], (m.view.shape[2] + 7) / 8}, DType::uint8, false);
        {
          py::gil_scoped_release release;
          cuda::pack_masks(m.view, out->view(), stream);
          M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
        }
        return out;
      },
      py::arg("masks"), py::kw_only(), py::arg("stream") = py::none(),
      "Bit-packs (N, H, W) 0/1 masks along W as numpy.packbits(axis=-1); returns a DeviceArray.");
}

void bind_cuda(py::module_& g) {
  bind_cuda_errors();
  bind_device_array(g);
  bind_streams_and_copies(g);
  bind_preprocess_gpu(g);
  bind_postprocess_gpu(g);
  bind_mask_ops_gpu(g);
}

#else  // no CUDA

constexpr const char kNoCuda[] =
    "m2f_edge was built without CUDA: reinstall on a machine with the CUDA toolkit (nvcc), e.g. "
    "M2F_CUDA=ON pip install .";

void bind_cuda(py::module_& g) {
  for (const char* name : {"DeviceArray", "Stream", "synchronize", "copy", "preprocess", "postprocess_deployable",
                           "postprocess_raw", "instance_map", "pack_masks"}) {
    g.def(name, [](py::args, py::kwargs) -> py::object { throw py::import_error(kNoCuda); }, kNoCuda);
  }
}

#endif

}  // namespace

void bind_gpu(py::module_& m) {
  py::module_ g = m.def_submodule("gpu", "GPU twins of the core functions (CUDA builds)");
#ifdef M2F_WITH_CUDA
  g.attr("built_with_cuda") = true;
#else
  g.attr("built_with_cuda") = false;
#endif
  g.def("available", []() {
#ifdef M2F_WITH_CUDA
    py::gil_scoped_release release;
    return query_gpu().present;
#else
    return false;
#endif
  }, "True when the core was built with CUDA and a CUDA device is usable now.");
  g.def(
      "device_info",
      []() {
        GpuInfo gpu;
        {
          py::gil_scoped_release release;
          gpu = query_gpu();
        }
        py::dict d;
        d["present"] = gpu.present;
        d["count"] = gpu.device_count;
        d["name"] = gpu.name;
        d["compute_capability"] = py::make_tuple(gpu.compute_major, gpu.compute_minor);
        d["integrated"] = gpu.integrated;
        d["can_map_host_memory"] = gpu.can_map_host_memory;
        d["zero_copy"] = gpu.present && gpu.integrated && gpu.can_map_host_memory;
        d["driver_version"] = gpu.driver_version;
        d["error"] = gpu.error.empty() ? py::object(py::none()) : py::object(py::str(gpu.error));
        return d;
      },
      "Facts about device 0: name, compute capability, integrated (shares DRAM with the CPU), whether\n"
      "mapped (zero-copy) buffers are used, and why no GPU is usable where none is.");
  bind_cuda(g);
}

}  // namespace m2f::bind

// The extension module m2f_edge._core. Each op family registers its functions from its own file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace m2f::bind {
void bind_build_info(py::module_& m);
void bind_transform(py::module_& m);
void bind_preprocess(py::module_& m);
void bind_postprocess(py::module_& m);
void bind_draw(py::module_& m);
void bind_gpu(py::module_& m);
void bind_tensorrt(py::module_& m);
}  // namespace m2f::bind

PYBIND11_MODULE(_core, m) {
  m.doc() = "m2f_edge core: preprocessing, post-processing and (where built) CUDA and TensorRT";
  m2f::bind::bind_build_info(m);
  m2f::bind::bind_transform(m);
  m2f::bind::bind_preprocess(m);
  m2f::bind::bind_postprocess(m);
  m2f::bind::bind_draw(m);
  m2f::bind::bind_gpu(m);
  m2f::bind::bind_tensorrt(m);
}

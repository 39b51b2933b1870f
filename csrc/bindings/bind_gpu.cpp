#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace m2f::bind {

void bind_gpu(py::module_& m) { (void)m; }  // TODO(owner of gpu): register functions

}  // namespace m2f::bind

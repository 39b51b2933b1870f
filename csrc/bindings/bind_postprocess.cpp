#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace m2f::bind {

void bind_postprocess(py::module_& m) { (void)m; }  // TODO(owner of postprocess): register functions

}  // namespace m2f::bind

#include <pybind11/pybind11.h>

#include <string>

#include "m2f/transform.hpp"

namespace py = pybind11;

namespace m2f::bind {

void bind_transform(py::module_& m) {
  py::class_<ResizeTransform>(m, "ResizeTransform",
                              "Where a frame sits in the network input: rows [0, content_height) and columns "
                              "[0, content_width), scaled from frame_height x frame_width.")
      .def(py::init([](const std::string& mode, int frame_height, int frame_width, int net_height, int net_width) {
             return make_transform(parse_resize_mode(mode), frame_height, frame_width, net_height, net_width);
           }),
           py::arg("mode"), py::arg("frame_height"), py::arg("frame_width"), py::arg("net_height"),
           py::arg("net_width"))
      .def_property_readonly("mode", [](const ResizeTransform& t) { return std::string(resize_mode_name(t.mode)); })
      .def_readonly("frame_height", &ResizeTransform::frame_height)
      .def_readonly("frame_width", &ResizeTransform::frame_width)
      .def_readonly("net_height", &ResizeTransform::net_height)
      .def_readonly("net_width", &ResizeTransform::net_width)
      .def_readonly("content_height", &ResizeTransform::content_height)
      .def_readonly("content_width", &ResizeTransform::content_width)
      .def("__repr__", [](const ResizeTransform& t) {
        return "ResizeTransform(mode='" + std::string(resize_mode_name(t.mode)) + "', frame=" +
               std::to_string(t.frame_height) + "x" + std::to_string(t.frame_width) + ", net=" +
               std::to_string(t.net_height) + "x" + std::to_string(t.net_width) + ", content=" +
               std::to_string(t.content_height) + "x" + std::to_string(t.content_width) + ")";
      })
      .def(py::pickle(
          [](const ResizeTransform& t) {
            return py::make_tuple(std::string(resize_mode_name(t.mode)), t.frame_height, t.frame_width, t.net_height,
                                  t.net_width);
          },
          [](const py::tuple& s) {
            return make_transform(parse_resize_mode(s[0].cast<std::string>()), s[1].cast<int>(), s[2].cast<int>(),
                                  s[3].cast<int>(), s[4].cast<int>());
          }));
}

}  // namespace m2f::bind

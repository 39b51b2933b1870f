#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "bindings/array_view.hpp"
#include "m2f/draw.hpp"

namespace py = pybind11;

namespace m2f::bind {

namespace {

void draw_instances_py(const py::array& frame, const py::array& instance_map, const py::array& colors, float alpha,
                       bool outline, int threads) {
  // --- types
  const TensorView frame_view = view_of(frame, "frame");
  const TensorView map_view = view_of(instance_map, "instance_map");
  const TensorView colors_view = view_of(colors, "colors");
  require_dtype(frame_view, {DType::uint8}, "frame");
  require_dtype(map_view, {DType::int32}, "instance_map");
  require_dtype(colors_view, {DType::uint8}, "colors");
  require_writable(frame, "frame");
  // --- sizes
  require_ndim(frame_view, 3, 3, "frame");
  require_ndim(map_view, 2, 2, "instance_map");
  require_ndim(colors_view, 2, 2, "colors");
  if (frame_view.shape[2] != 3)
    throw py::value_error("argument 'frame': expected shape (H, W, 3), got " + shape_string(frame_view));
  if (map_view.shape[0] != frame_view.shape[0] || map_view.shape[1] != frame_view.shape[1])
    throw py::value_error("argument 'instance_map': expected shape (" + std::to_string(frame_view.shape[0]) + ", " +
                          std::to_string(frame_view.shape[1]) + ") like the frame, got " + shape_string(map_view));
  if (colors_view.shape[1] != 3)
    throw py::value_error("argument 'colors': expected shape (N, 3), got " + shape_string(colors_view));
  if (!(alpha >= 0.0f && alpha <= 1.0f))
    throw py::value_error("argument 'alpha': expected a number in [0, 1], got " + std::to_string(alpha));
  if (threads < 0) throw py::value_error("argument 'threads': expected >= 0 (0 = all cores)");
  // --- device
  // numpy arrays live in host memory; nothing to check beyond view_of.
  py::gil_scoped_release release;
  draw_instances(frame_view, map_view, colors_view, alpha, outline, threads);
}

}  // namespace

void bind_draw(py::module_& m) {
  m.def("draw_instances", &draw_instances_py, py::arg("frame"), py::arg("instance_map"), py::arg("colors"),
        py::kw_only(), py::arg("alpha") = 0.5f, py::arg("outline") = true, py::arg("threads") = 0,
        "Blend colors[i] into the pixels where instance_map == i + 1, in place (frame (H, W, 3) uint8, any "
        "strides). alpha is quantised to 1/255 steps: out = round((f * (255 - w) + c * w) / 255), "
        "w = round(alpha * 255). With outline=True the pixels on an instance's border (a 4-neighbour inside "
        "the image belongs to something else) get the colour itself. Raises ValueError, leaving the frame "
        "untouched, when a map value is outside 0..N.");
}

}  // namespace m2f::bind

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/array_view.hpp"
#include "m2f/math/resize.hpp"
#include "m2f/preprocess.hpp"

namespace py = pybind11;

namespace m2f::bind {
namespace {

std::string numpy_dtype_name(const py::array& array) {
  return py::str(static_cast<const py::object&>(array.dtype())).cast<std::string>();
}

std::string shape_of(const py::array& array) {
  return py::str(array.attr("shape")).cast<std::string>();
}

// One frame argument as an (H, W, C) uint8 view; `arg` names it in errors ("frames" or "frames[2]").
void frame_view(const py::handle& object, ColorOrder color, bool allow_batch_axis, std::vector<TensorView>& views,
                      const std::string& arg) {
  // --- types
  if (!py::isinstance<py::array>(object))
    throw py::type_error("argument '" + arg + "': expected a numpy uint8 array, got " +
                         std::string(Py_TYPE(object.ptr())->tp_name));
  const auto array = py::reinterpret_borrow<py::array>(object);
  const py::dtype dtype = array.dtype();
  if (!(dtype.kind() == 'u' && dtype.itemsize() == 1))
    throw py::type_error("argument '" + arg + "': expected dtype uint8, got " + numpy_dtype_name(array));
  // --- sizes
  const int channels = color_channels(color);
  const auto ndim = array.ndim();
  const int max_ndim = allow_batch_axis ? 4 : 3;
  if (ndim < 2 || ndim > max_ndim)
    throw py::value_error("argument '" + arg + "': expected " +
                          (allow_batch_axis ? std::string("(H, W), (H, W, C) or (B, H, W, C)")
                                            : std::string("(H, W) or (H, W, C)")) +
                          ", got shape " + shape_of(array));
  const std::string expected_channels = "color='" + std::string(color_order_name(color)) + "' needs " +
                                        std::to_string(channels) + " channel" + (channels > 1 ? "s" : "");
  const py::ssize_t frame_axis = ndim == 4 ? 1 : 0;
  if (ndim == 2 ? channels != 1 : array.shape(ndim - 1) != channels)
    throw py::value_error("argument '" + arg + "': " + expected_channels + ", got shape " + shape_of(array) +
                          (ndim == 2 ? " (a 2-D frame is gray: pass color='gray')" : ""));
  for (py::ssize_t axis = 0; axis < ndim; ++axis)
    if (array.shape(axis) == 0) throw py::value_error("argument '" + arg + "': empty array, shape " + shape_of(array));
  if (array.shape(frame_axis) < kMinFrameSide || array.shape(frame_axis + 1) < kMinFrameSide)
    throw py::value_error("argument '" + arg + "': frames must be at least " + std::to_string(kMinFrameSide) + "x" +
                          std::to_string(kMinFrameSide) + " (height x width), got shape " + shape_of(array));
  if (array.shape(frame_axis) > kMaxSide || array.shape(frame_axis + 1) > kMaxSide)
    throw py::value_error("argument '" + arg + "': frames must be at most " + std::to_string(kMaxSide) +
                          " pixels high and wide, got shape " + shape_of(array));
  // --- device
  // numpy arrays live in host memory; the view is read in place with its own strides.
  TensorView base;
  base.dtype = DType::uint8;
  base.device = Device::cpu;
  base.ndim = 3;
  base.shape = {array.shape(frame_axis), array.shape(frame_axis + 1), channels};
  base.strides = {array.strides(frame_axis), array.strides(frame_axis + 1), ndim == 2 ? 1 : array.strides(ndim - 1)};
  const auto* data = static_cast<const char*>(array.data());
  const py::ssize_t batch = ndim == 4 ? array.shape(0) : 1;
  for (py::ssize_t b = 0; b < batch; ++b) {
    TensorView v = base;
    v.data = const_cast<char*>(data + (ndim == 4 ? b * array.strides(0) : 0));
    views.push_back(v);
  }
}

std::array<float, 3> rgb_triplet(const py::object& value, const char* arg) {
  std::array<float, 3> result{};
  // --- types
  try {
    if (py::isinstance<py::float_>(value) || py::isinstance<py::int_>(value)) {
      result.fill(value.cast<float>());
    } else {
      if (py::isinstance<py::str>(value) || !py::isinstance<py::sequence>(value))
        throw py::cast_error();
      const auto items = py::reinterpret_borrow<py::sequence>(value);
      // --- sizes
      if (items.size() != 3)
        throw py::value_error(std::string("argument '") + arg + "': expected 3 values (R, G, B), got " +
                              std::to_string(items.size()));
      for (int c = 0; c < 3; ++c) result[c] = items[static_cast<std::size_t>(c)].cast<float>();
    }
  } catch (const py::cast_error&) {
    throw py::type_error(std::string("argument '") + arg + "': expected a number or 3 numbers (R, G, B), got " +
                         py::str(value).cast<std::string>());
  }
  for (float v : result)
    if (!std::isfinite(v))
      throw py::value_error(std::string("argument '") + arg + "': values must be finite, got " +
                            py::str(value).cast<std::string>());
  return result;
}

py::list preprocess_binding(const py::object& frames, const py::object& out, const std::string& color,
                            const std::string& resize, const py::object& mean, const py::object& stddev, int threads) {
  PreprocessOptions options;
  // --- types
  try {
    options.color = parse_color_order(color);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(std::string("argument 'color': ") + e.what());
  }
  try {
    options.resize = parse_resize_mode(resize);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(std::string("argument 'resize': ") + e.what());
  }
  options.mean = rgb_triplet(mean, "mean");
  options.stddev = rgb_triplet(stddev, "std");
  for (float s : options.stddev)
    if (s == 0.f) throw py::value_error("argument 'std': values must be nonzero, got " + py::str(stddev).cast<std::string>());
  if (threads < 0) throw py::value_error("argument 'threads': expected 0 (one per core) or more, got " + std::to_string(threads));
  options.threads = threads;

  std::vector<TensorView> frame_views;
  std::vector<py::object> keep_alive;  // the frames stay referenced while the GIL is released
  if (py::isinstance<py::list>(frames) || py::isinstance<py::tuple>(frames)) {
    const auto items = py::reinterpret_borrow<py::sequence>(frames);
    if (items.size() == 0) throw py::value_error("argument 'frames': empty list, expected at least one frame");
    for (std::size_t i = 0; i < items.size(); ++i) {
      py::object item = items[i];
      frame_view(item, options.color, false, frame_views, "frames[" + std::to_string(i) + "]");
      keep_alive.push_back(item);
    }
  } else {
    frame_view(frames, options.color, true, frame_views, "frames");
    keep_alive.push_back(frames);
  }

  if (!py::isinstance<py::array>(out))
    throw py::type_error("argument 'out': expected a numpy float32 or float16 array, got " +
                         std::string(Py_TYPE(out.ptr())->tp_name));
  const auto out_array = py::reinterpret_borrow<py::array>(out);
  const py::dtype out_dtype = out_array.dtype();
  if (!(out_dtype.kind() == 'f' && (out_dtype.itemsize() == 4 || out_dtype.itemsize() == 2)) ||
      !out_dtype.attr("isnative").cast<bool>())
    throw py::type_error("argument 'out': expected dtype float32 or float16 (native byte order), got " +
                         numpy_dtype_name(out_array));
  TensorView out_view = view_of(out_array, "out");
  // --- sizes
  const auto batch = static_cast<std::int64_t>(frame_views.size());
  require_ndim(out_view, 4, 4, "out");
  if (out_view.shape[0] != batch || out_view.shape[1] != 3 || out_view.shape[2] < 1 || out_view.shape[3] < 1 ||
      out_view.shape[2] > kMaxSide || out_view.shape[3] > kMaxSide)
    throw py::value_error("argument 'out': expected shape (" + std::to_string(batch) +
                          ", 3, net_height, net_width) for " + std::to_string(batch) + " frame" +
                          (batch > 1 ? "s" : "") + ", got " + shape_string(out_view));
  if (!out_view.is_contiguous())
    throw py::value_error("argument 'out': must be C-contiguous (np.empty((B, 3, H, W), np.float32) is)");
  if (reinterpret_cast<std::uintptr_t>(out_view.data) % dtype_size(out_view.dtype) != 0)
    throw py::value_error("argument 'out': must be aligned to its element size");
  require_writable(out_array, "out");
  // --- device
  // numpy memory is host memory: the CPU core writes it directly.

  std::vector<ResizeTransform> transforms;
  {
    py::gil_scoped_release release;
    transforms = preprocess(frame_views, out_view, options);
  }
  py::list result;
  for (const auto& t : transforms) result.append(py::cast(t));
  return result;
}

// Test hook for the shared host/device conversion math::float_to_half_bits (the CPU output path
// may use the hardware instruction instead, and CUDA kernels call this function).
py::array_t<std::uint16_t> float_to_half_bits_binding(const py::array& values) {
  // --- types
  if (!(values.dtype().kind() == 'f' && values.dtype().itemsize() == 4) ||
      !values.dtype().attr("isnative").cast<bool>())
    throw py::type_error("argument 'values': expected a float32 array, got " + numpy_dtype_name(values));
  // --- sizes
  TensorView view = view_of(values, "values");
  require_ndim(view, 1, 1, "values");
  if (!view.is_contiguous()) throw py::value_error("argument 'values': must be contiguous");
  // --- device
  py::array_t<std::uint16_t> result(view.shape[0]);
  const float* source = view.ptr<float>();
  std::uint16_t* target = result.mutable_data();
  {
    py::gil_scoped_release release;
    for (std::int64_t i = 0; i < view.shape[0]; ++i) target[i] = math::float_to_half_bits(source[i]);
  }
  return result;
}

}  // namespace

void bind_preprocess(py::module_& m) {
  m.def("preprocess", &preprocess_binding, py::arg("frames"), py::arg("out"), py::kw_only(),
        py::arg("color") = "bgr", py::arg("resize") = "stretch",
        py::arg("mean") = py::make_tuple(0.485, 0.456, 0.406), py::arg("std") = py::make_tuple(0.229, 0.224, 0.225),
        py::arg("threads") = 0,
        R"doc(Resize, reorder to RGB and normalise frames into a network input, in one pass, in place.

frames: uint8 numpy array (H, W), (H, W, C) or (B, H, W, C), or a list of (H, W) / (H, W, C)
    arrays (sizes may differ). C is 1, 3 or 4 and must match `color`. Any strides (crops,
    negative steps, Fortran order) are read in place; no copy of the frame is made.
    Frames must be at least 32x32. A 3-D array is one (H, W, C) frame: a batch of gray frames is
    (B, H, W, 1).
out: writable C-contiguous float32 or float16 array (B, 3, net_height, net_width); its shape gives
    the network size.
color: 'bgr' (OpenCV), 'rgb', 'bgra', 'rgba' or 'gray' (replicated to R, G and B).
resize: 'stretch' (whole input, aspect ratio not kept) or 'letterbox' (aspect ratio kept,
    bottom/right padded with pixel value 0 before normalising).
mean, std: RGB, in [0, 1] units (a single number applies to all three); out = (x/255 - mean)/std.
threads: worker threads, 0 = one per core.

Sampling matches cv2.resize(..., interpolation=cv2.INTER_LINEAR) on float input (half-pixel
centres, clamped edges, no antialiasing). Returns one ResizeTransform per frame.)doc");
  m.def("_float_to_half_bits", &float_to_half_bits_binding, py::arg("values"),
        "Test hook: IEEE half bits (uint16) of float32 values by the host/device function the CUDA kernels share.");
}

}  // namespace m2f::bind

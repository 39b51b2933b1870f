// Turns Python arrays into m2f::TensorView, checking in labelled blocks and naming the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <initializer_list>
#include <sstream>
#include <string>

#include "m2f/tensor_view.hpp"

namespace m2f::bind {
namespace py = pybind11;

inline std::string shape_string(const TensorView& v) {
  std::ostringstream s;
  s << "(";
  for (int i = 0; i < v.ndim; ++i) s << (i ? ", " : "") << v.shape[i];
  if (v.ndim == 1) s << ",";
  s << ")";
  return s.str();
}

inline DType dtype_from_numpy(const py::dtype& dt, const char* arg) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  if (kind == 'u' && size == 1) return DType::uint8;
  if (kind == 'b' && size == 1) return DType::boolean;
  if (kind == 'f' && size == 2) return DType::float16;
  if (kind == 'f' && size == 4) return DType::float32;
  if (kind == 'i' && size == 4) return DType::int32;
  if (kind == 'i' && size == 8) return DType::int64;
  throw py::type_error(std::string("argument '") + arg + "': unsupported dtype " +
                       py::str(static_cast<const py::object&>(dt)).cast<std::string>());
}

// A view of a numpy array (no copy). The array must outlive the view.
inline TensorView view_of(const py::array& array, const char* arg) {
  // --- types
  TensorView v;
  v.dtype = dtype_from_numpy(array.dtype(), arg);
  // --- sizes
  if (array.ndim() > kMaxDims)
    throw py::value_error(std::string("argument '") + arg + "': at most " + std::to_string(kMaxDims) +
                          " dimensions, got " + std::to_string(array.ndim()));
  v.ndim = static_cast<int>(array.ndim());
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = array.shape(i);
    v.strides[i] = array.strides(i);
  }
  // --- device
  v.device = Device::cpu;
  v.data = const_cast<void*>(array.data());
  return v;
}

inline void require_dtype(const TensorView& v, std::initializer_list<DType> allowed, const char* arg) {
  std::string names;
  for (DType d : allowed) {
    if (v.dtype == d) return;
    names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  throw py::type_error(std::string("argument '") + arg + "': expected dtype " + names + ", got " +
                       dtype_name(v.dtype));
}

inline void require_ndim(const TensorView& v, int lo, int hi, const char* arg) {
  if (v.ndim < lo || v.ndim > hi) {
    std::ostringstream s;
    s << "argument '" << arg << "': expected " << lo;
    if (hi != lo) s << " to " << hi;
    s << " dimensions, got shape " << shape_string(v);
    throw py::value_error(s.str());
  }
}

inline void require_writable(const py::array& array, const char* arg) {
  if (!array.writeable())
    throw py::value_error(std::string("argument '") + arg + "': the array is read-only");
}

}  // namespace m2f::bind

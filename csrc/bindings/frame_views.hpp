// A Python frame list as views, for every binding that takes frames on the GPU (CUDA builds only).
#pragma once

#include <pybind11/pybind11.h>

#include <functional>
#include <vector>

#include "bindings/cuda_array.hpp"
#include "m2f/tensor_view.hpp"

namespace m2f::bind {

struct FrameViews {
  std::vector<BorrowedView> borrowed;  // keeps the arrays alive while the views are used
  std::vector<TensorView> frames;      // (H, W, C) each
};

// `frames`: a list or tuple of arrays, or one array; each array (H, W) gray, (H, W, C), or
// (B, H, W, C) for B frames. `borrow` turns one array into a view (gpu_view_of, a copy of a numpy
// array, ...), in order, and names the argument in its errors.
FrameViews frame_views(const py::object& frames, const std::function<BorrowedView(const py::handle&)>& borrow);

}  // namespace m2f::bind

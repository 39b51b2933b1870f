#ifdef M2F_WITH_CUDA
#include "bindings/frame_views.hpp"

namespace m2f::bind {

FrameViews frame_views(const py::object& frames, const std::function<BorrowedView(const py::handle&)>& borrow) {
  py::list items;
  if (py::isinstance<py::list>(frames) || py::isinstance<py::tuple>(frames))
    items = py::list(frames);
  else
    items.append(frames);
  FrameViews out;
  for (const py::handle item : items) {
    out.borrowed.push_back(borrow(item));
    TensorView v = out.borrowed.back().view;
    if (v.ndim == 2) {  // (H, W) gray
      v.ndim = 3;
      v.shape[2] = 1;
      v.strides[2] = 1;
    }
    if (v.ndim != 4) {
      out.frames.push_back(v);
      continue;
    }
    for (std::int64_t b = 0; b < v.shape[0]; ++b) {  // (B, H, W, C): one frame per b
      TensorView f = v;
      f.data = static_cast<char*>(v.data) + b * v.strides[0];
      f.ndim = 3;
      for (int d = 0; d < 3; ++d) {
        f.shape[d] = v.shape[d + 1];
        f.strides[d] = v.strides[d + 1];
      }
      out.frames.push_back(f);
    }
  }
  return out;
}

}  // namespace m2f::bind
#endif

// Shared by both post-processing paths: selection (threshold, sort, cap) and the mapping of kept
// network-size masks back to the frame. Internal to the core.
#pragma once

#include <cstdint>
#include <vector>

#include "m2f/math/mask.hpp"
#include "m2f/postprocess.hpp"

namespace m2f::detail {

// A network-size mask restricted to the transform's content region. Element (y, x) lives at
// data + (y - origin_y) * row_stride + (x - origin_x) * col_stride and is only read for
// y in [y_begin, y_end), x in [x_begin, x_end): every nonzero value lies inside that box.
struct SourceMask {
  const char* data = nullptr;
  DType dtype = DType::uint8;
  std::int64_t row_stride = 0, col_stride = 0;
  int origin_y = 0, origin_x = 0;
  int y_begin = 0, y_end = 0, x_begin = 0, x_end = 0;
  bool empty() const { return y_begin >= y_end || x_begin >= x_end; }
};

struct Candidate {
  std::int64_t query = 0;
  float score = 0.f;
  std::int64_t label = 0;
  SourceMask mask;
};

// Keeps score >= threshold (NaN never passes), stable-sorts descending, caps at max_instances.
void select_candidates(std::vector<Candidate>& candidates, const SelectionOptions& options);

// Brings each candidate's mask to the frame (cv2 INTER_LINEAR, > 0.5) inside its window only,
// drops the ones that come out empty, and fills the crops, boxes and areas. candidates are in
// output order; their supports are first shrunk to where their masks are nonzero.
FrameInstances map_to_frame(std::vector<Candidate> candidates, const ResizeTransform& transform, int threads);

// Scales a strided element to float (uint8 / bool as 0..255 / 0..1, float16 widened).
float element_as_float(const char* address, DType dtype);

void check_transform(const ResizeTransform& transform);

// The output indices [out_begin, out_end) whose taps reach source indices [begin, end); taps are
// monotonic, so only that span of the output can be nonzero.
void output_range(const std::vector<math::MaskTap>& taps, int begin, int end, int& out_begin, int& out_end);

}  // namespace m2f::detail

// Deployable contract: the graph already selected K masks; pick, order and map them to the frame.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/postprocess_frame.hpp"

namespace m2f {
namespace {

std::int64_t integer_at(const TensorView& v, std::int64_t i) {
  const char* p = static_cast<const char*>(v.data) + i * v.strides[0];
  if (v.dtype == DType::int32) {
    std::int32_t x;
    std::memcpy(&x, p, sizeof x);
    return x;
  }
  std::int64_t x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

}  // namespace

FrameInstances postprocess_deployable(const TensorView& masks, const TensorView& scores, const TensorView& classes,
                                      const ResizeTransform& transform, const SelectionOptions& options) {
  detail::check_transform(transform);
  if (masks.ndim != 3 || scores.ndim != 1 || classes.ndim != 1)
    throw std::invalid_argument("postprocess_deployable: masks (K,H,W), scores (K,), classes (K,) expected");
  const std::int64_t k = masks.shape[0];
  if (scores.shape[0] != k || classes.shape[0] != k)
    throw std::invalid_argument("postprocess_deployable: masks, scores and classes disagree on K");
  if (masks.shape[1] != transform.net_height || masks.shape[2] != transform.net_width)
    throw std::invalid_argument("postprocess_deployable: masks are not at the transform's network size");
  if (classes.dtype != DType::int32 && classes.dtype != DType::int64)
    throw std::invalid_argument("postprocess_deployable: classes must be int32 or int64");

  std::vector<detail::Candidate> candidates;
  for (std::int64_t i = 0; i < k; ++i) {
    const float s = detail::element_as_float(static_cast<const char*>(scores.data) + i * scores.strides[0], scores.dtype);
    if (!(s >= options.score_threshold)) continue;
    detail::Candidate c;
    c.query = i;
    c.score = s;
    candidates.push_back(c);
  }
  detail::select_candidates(candidates, options);

  // Only the kept masks are read: once to find the box of their nonzero values (all-zero rows a
  // word at a time), then inside that box only while mapping.
  for (detail::Candidate& c : candidates) {
    c.label = integer_at(classes, c.query);
    detail::SourceMask& m = c.mask;
    m.data = static_cast<const char*>(masks.data) + c.query * masks.strides[0];
    m.dtype = masks.dtype;
    m.row_stride = masks.strides[1];
    m.col_stride = masks.strides[2];
    m.y_end = transform.content_height;
    m.x_end = transform.content_width;
  }
  return detail::map_to_frame(std::move(candidates), transform, options.threads);
}

}  // namespace m2f

// Deployable contract: the graph already selected K masks; pick, order and map them to the frame.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/postprocess_frame.hpp"
#include "m2f/parallel.hpp"

namespace m2f {
namespace {

// Any nonzero byte marks a nonzero element (a float -0.0 counts too: a harmless superset).
bool any_nonzero_bytes(const unsigned char* p, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, p + i, 8);
    if (word) return true;
  }
  for (; i < n; ++i)
    if (p[i]) return true;
  return false;
}

// The box of nonzero values of a mask inside the content region, with row-wise early exits.
void find_support(detail::SourceMask& m, int rows, int cols) {
  const std::size_t item = dtype_size(m.dtype);
  const bool dense_rows = m.col_stride == static_cast<std::int64_t>(item);
  auto element_nonzero = [&](const char* row, int x) {
    const char* e = row + static_cast<std::int64_t>(x) * m.col_stride;
    for (std::size_t b = 0; b < item; ++b)
      if (e[b]) return true;
    return false;
  };
  int y0 = rows, y1 = -1, x0 = cols, x1 = -1;
  for (int y = 0; y < rows; ++y) {
    const char* row = m.data + static_cast<std::int64_t>(y) * m.row_stride;
    if (dense_rows && !any_nonzero_bytes(reinterpret_cast<const unsigned char*>(row), item * cols)) continue;
    int first = 0;
    while (first < cols && !element_nonzero(row, first)) ++first;
    if (first == cols) continue;
    int last = cols - 1;
    while (last > first && !element_nonzero(row, last)) --last;
    y0 = std::min(y0, y);
    y1 = y;
    x0 = std::min(x0, first);
    x1 = std::max(x1, last);
  }
  if (y1 < 0) {
    m.y_begin = m.y_end = m.x_begin = m.x_end = 0;
    return;
  }
  m.y_begin = y0;
  m.y_end = y1 + 1;
  m.x_begin = x0;
  m.x_end = x1 + 1;
}

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

  // Only the kept masks are read: their support, then their pixels while mapping.
  const int ch = transform.content_height, cw = transform.content_width;
  std::atomic<std::int64_t> next{0};
  const std::int64_t n = static_cast<std::int64_t>(candidates.size());
  const int workers =
      static_cast<int>(std::min<std::int64_t>(options.threads > 0 ? options.threads : default_thread_count(), n));
  parallel_for(workers, workers, 1, [&](std::int64_t, std::int64_t) {
    for (;;) {
      const std::int64_t i = next.fetch_add(1);
      if (i >= n) break;
      detail::Candidate& c = candidates[static_cast<std::size_t>(i)];
      c.label = integer_at(classes, c.query);
      detail::SourceMask& m = c.mask;
      m.data = static_cast<const char*>(masks.data) + c.query * masks.strides[0];
      m.dtype = masks.dtype;
      m.row_stride = masks.strides[1];
      m.col_stride = masks.strides[2];
      find_support(m, ch, cw);
    }
  });
  return detail::map_to_frame(candidates, transform, options.threads);
}

}  // namespace m2f

// Raw-head contract: TAO's (= detectron2's) instance inference, then the common selection and mapping.
//
// Exact pruning keeps the result equal to the full algorithm:
//  - the mask score is at most 1, so a top-k entry whose class probability is below the score
//    threshold can never be kept: its mask is never upsampled;
//  - a bilinear blend of non-positive logits is non-positive, so only network pixels whose taps
//    reach a positive low-res logit can be inside the mask: the upsampling covers that box only.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/postprocess_frame.hpp"
#include "m2f/math/mask.hpp"
#include "m2f/parallel.hpp"

namespace m2f {
namespace {

float logit_at(const TensorView& v, std::int64_t q, std::int64_t a, std::int64_t b) {
  const char* p = static_cast<const char*>(v.data) + q * v.strides[0] + a * v.strides[1] +
                  (v.ndim > 2 ? b * v.strides[2] : 0);
  return detail::element_as_float(p, v.dtype);
}

// One query's binary mask at network size, kept as the crop that can hold positives.
struct QueryMask {
  double sigmoid_sum = 0.0;
  std::int64_t pixels = 0;
  int origin_y = 0, origin_x = 0, crop_w = 0;
  std::vector<std::uint8_t> crop;
  int y0 = 0, y1 = -1, x0 = 0, x1 = -1;  // tight box of positives, network coordinates
};

// Low-res row y of query q as float: the view's own memory where it is dense float32, else
// converted into `scratch`.
const float* low_res_row(const TensorView& mask_logits, std::int64_t q, int y, std::vector<float>& scratch) {
  const int w = static_cast<int>(mask_logits.shape[2]);
  const char* src = static_cast<const char*>(mask_logits.data) + q * mask_logits.strides[0] + y * mask_logits.strides[1];
  if (mask_logits.dtype == DType::float32 && mask_logits.strides[2] == static_cast<std::int64_t>(sizeof(float)) &&
      reinterpret_cast<std::uintptr_t>(src) % alignof(float) == 0)
    return reinterpret_cast<const float*>(src);
  scratch.resize(static_cast<std::size_t>(w));
  for (int x = 0; x < w; ++x) scratch[static_cast<std::size_t>(x)] = detail::element_as_float(src + x * mask_logits.strides[2], mask_logits.dtype);
  return scratch.data();
}

void upsample_query(const TensorView& mask_logits, std::int64_t q, const std::vector<math::MaskTap>& xtaps,
                    const std::vector<math::MaskTap>& ytaps, QueryMask& out) {
  const int h = static_cast<int>(mask_logits.shape[1]), w = static_cast<int>(mask_logits.shape[2]);
  // the box of positive logits, read in place (other dtypes one converted row at a time)
  std::vector<float> row_scratch;
  int ly0 = h, ly1 = -1, lx0 = w, lx1 = -1;
  for (int y = 0; y < h; ++y) {
    const float* row = low_res_row(mask_logits, q, y, row_scratch);
    for (int x = 0; x < w; ++x)
      if (row[x] > 0.f) {
        ly0 = std::min(ly0, y);
        ly1 = y;
        lx0 = std::min(lx0, x);
        lx1 = std::max(lx1, x);
      }
  }
  if (ly1 < 0) return;  // no positive logit: no pixel of the upsampled mask is positive
  int ny0, ny1, nx0, nx1;
  detail::output_range(ytaps, ly0, ly1 + 1, ny0, ny1);
  detail::output_range(xtaps, lx0, lx1 + 1, nx0, nx1);
  if (ny0 >= ny1 || nx0 >= nx1) return;  // no output pixel blends a positive logit
  const int span = nx1 - nx0;
  out.origin_y = ny0;
  out.origin_x = nx0;
  out.crop_w = span;
  out.crop.assign(static_cast<std::size_t>(ny1 - ny0) * span, 0);
  out.y0 = ny1;
  out.x0 = nx1;

  // horizontal pass of the low-res rows the vertical taps need, computed once each
  const int row_lo = ytaps[static_cast<std::size_t>(ny0)].i0, row_hi = ytaps[static_cast<std::size_t>(ny1 - 1)].i1;
  std::vector<float> hrows(static_cast<std::size_t>(row_hi - row_lo + 1) * span);
  for (int y = row_lo; y <= row_hi; ++y) {
    const float* src = low_res_row(mask_logits, q, y, row_scratch);
    float* dst = hrows.data() + static_cast<std::size_t>(y - row_lo) * span;
    for (int dx = nx0; dx < nx1; ++dx) {
      const math::MaskTap& t = xtaps[static_cast<std::size_t>(dx)];
      dst[dx - nx0] = math::lerp_taps(src[t.i0], src[t.i1], t);
    }
  }
  for (int dy = ny0; dy < ny1; ++dy) {
    const math::MaskTap& t = ytaps[static_cast<std::size_t>(dy)];
    const float* a = hrows.data() + static_cast<std::size_t>(t.i0 - row_lo) * span;
    const float* b = hrows.data() + static_cast<std::size_t>(t.i1 - row_lo) * span;
    std::uint8_t* o = out.crop.data() + static_cast<std::size_t>(dy - ny0) * span;
    float row_sum = 0.f;
    int row_count = 0, first = span, last = -1;
    for (int k = 0; k < span; ++k) {
      const float v = math::blend_rows(a[k], b[k], t.w0, t.w1);
      if (v > 0.f) {
        o[k] = 1;
        row_sum += math::sigmoid(v);
        ++row_count;
        if (first == span) first = k;
        last = k;
      }
    }
    if (row_count) {
      out.sigmoid_sum += row_sum;
      out.pixels += row_count;
      out.y0 = std::min(out.y0, dy);
      out.y1 = dy;
      out.x0 = std::min(out.x0, nx0 + first);
      out.x1 = std::max(out.x1, nx0 + last);
    }
  }
}

}  // namespace

FrameInstances postprocess_raw(const TensorView& class_logits, const TensorView& mask_logits,
                               const ResizeTransform& transform, const RawHeadOptions& raw,
                               const SelectionOptions& options) {
  detail::check_transform(transform);
  if (class_logits.ndim != 2 || mask_logits.ndim != 3)
    throw std::invalid_argument("postprocess_raw: class_logits (Q,C+1) and mask_logits (Q,h,w) expected");
  const std::int64_t queries = class_logits.shape[0];
  const std::int64_t columns = class_logits.shape[1];
  if (mask_logits.shape[0] != queries) throw std::invalid_argument("postprocess_raw: Q differs");
  if (columns < 2) throw std::invalid_argument("postprocess_raw: class_logits needs C+1 >= 2 columns");
  if (mask_logits.shape[1] <= 0 || mask_logits.shape[2] <= 0)
    throw std::invalid_argument("postprocess_raw: empty mask_logits");
  std::int64_t no_object = raw.no_object_index < 0 ? raw.no_object_index + columns : raw.no_object_index;
  if (no_object < 0 || no_object >= columns) throw std::invalid_argument("postprocess_raw: no_object_index out of range");
  if (raw.topk < 1) throw std::invalid_argument("postprocess_raw: topk must be >= 1");
  const std::int64_t classes = columns - 1;

  // softmax over C+1, the no-object column dropped: probs (Q, C)
  std::vector<float> probs(static_cast<std::size_t>(queries * classes));
  std::vector<float> row(static_cast<std::size_t>(columns));
  for (std::int64_t q = 0; q < queries; ++q) {
    float top = -INFINITY;
    for (std::int64_t c = 0; c < columns; ++c) {
      row[static_cast<std::size_t>(c)] = logit_at(class_logits, q, c, 0);
      top = std::max(top, row[static_cast<std::size_t>(c)]);
    }
    float total = 0.f;
    for (auto& v : row) {
      v = std::exp(v - top);
      total += v;
    }
    std::int64_t j = 0;
    for (std::int64_t c = 0; c < columns; ++c)
      if (c != no_object) probs[static_cast<std::size_t>(q * classes + j++)] = row[static_cast<std::size_t>(c)] / total;
  }

  // top-k over Q*C: higher probability first, ties to the lower flat index, NaN last
  const std::int64_t total_entries = queries * classes;
  const std::int64_t k = std::min<std::int64_t>(raw.topk, total_entries);
  std::vector<std::int64_t> order(static_cast<std::size_t>(total_entries));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  auto before = [&](std::int64_t a, std::int64_t b) {
    const float pa = probs[static_cast<std::size_t>(a)], pb = probs[static_cast<std::size_t>(b)];
    const bool na = std::isnan(pa), nb = std::isnan(pb);
    if (na != nb) return nb;
    if (!na && pa != pb) return pa > pb;
    return a < b;
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
  order.resize(static_cast<std::size_t>(k));

  // entries that can still reach the threshold, and the distinct queries whose masks they need
  std::vector<std::int64_t> entries;
  std::vector<int> slot_of_query(static_cast<std::size_t>(queries), -1);
  std::vector<std::int64_t> needed;
  for (std::int64_t e : order) {
    if (!(probs[static_cast<std::size_t>(e)] >= options.score_threshold)) continue;
    entries.push_back(e);
    const std::int64_t q = e / classes;
    if (slot_of_query[static_cast<std::size_t>(q)] < 0) {
      slot_of_query[static_cast<std::size_t>(q)] = static_cast<int>(needed.size());
      needed.push_back(q);
    }
  }

  const int net_h = transform.net_height, net_w = transform.net_width;
  const int low_h = static_cast<int>(mask_logits.shape[1]), low_w = static_cast<int>(mask_logits.shape[2]);
  std::vector<math::MaskTap> xtaps(static_cast<std::size_t>(net_w)), ytaps(static_cast<std::size_t>(net_h));
  for (int x = 0; x < net_w; ++x) xtaps[static_cast<std::size_t>(x)] = math::torch_linear_tap(x, low_w, net_w);
  for (int y = 0; y < net_h; ++y) ytaps[static_cast<std::size_t>(y)] = math::torch_linear_tap(y, low_h, net_h);

  std::vector<QueryMask> query_masks(needed.size());
  std::atomic<std::int64_t> next{0};
  const std::int64_t n_needed = static_cast<std::int64_t>(needed.size());
  const int workers = static_cast<int>(
      std::min<std::int64_t>(options.threads > 0 ? options.threads : default_thread_count(), n_needed));
  parallel_for(workers, workers, 1, [&](std::int64_t, std::int64_t) {
    for (;;) {
      const std::int64_t i = next.fetch_add(1);
      if (i >= n_needed) break;
      upsample_query(mask_logits, needed[static_cast<std::size_t>(i)], xtaps, ytaps,
                     query_masks[static_cast<std::size_t>(i)]);
    }
  });

  std::vector<detail::Candidate> candidates;
  candidates.reserve(entries.size());
  const int ch = transform.content_height, cw = transform.content_width;
  for (std::int64_t e : entries) {
    const std::int64_t q = e / classes;
    const QueryMask& qm = query_masks[static_cast<std::size_t>(slot_of_query[static_cast<std::size_t>(q)])];
    detail::Candidate c;
    c.query = q;
    c.label = e % classes;
    c.score = math::instance_score(probs[static_cast<std::size_t>(e)], qm.sigmoid_sum, qm.pixels);
    detail::SourceMask& m = c.mask;
    m.dtype = DType::uint8;
    if (qm.pixels > 0) {
      m.data = reinterpret_cast<const char*>(qm.crop.data());
      m.row_stride = qm.crop_w;
      m.col_stride = 1;
      m.origin_y = qm.origin_y;
      m.origin_x = qm.origin_x;
      // only the content region goes back to the frame (letterbox padding is cut off)
      m.y_begin = qm.y0;
      m.y_end = std::min(qm.y1 + 1, ch);
      m.x_begin = qm.x0;
      m.x_end = std::min(qm.x1 + 1, cw);
      if (m.empty()) m.y_begin = m.y_end = m.x_begin = m.x_end = 0;
    }
    candidates.push_back(c);
  }
  detail::select_candidates(candidates, options);
  return detail::map_to_frame(std::move(candidates), transform, options.threads);
}

}  // namespace m2f

// Selection and the mapping of kept masks back to the frame, shared by both post-processing paths.
#include "core/postprocess_frame.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "m2f/math/mask.hpp"
#include "m2f/parallel.hpp"

namespace m2f::detail {

float element_as_float(const char* address, DType dtype) {
  switch (dtype) {
    case DType::float32: {
      float v;
      std::memcpy(&v, address, sizeof v);
      return v;
    }
    case DType::float16: {
      std::uint16_t bits;
      std::memcpy(&bits, address, sizeof bits);
      return math::half_bits_to_float(bits);
    }
    case DType::uint8: return static_cast<float>(*reinterpret_cast<const std::uint8_t*>(address));
    case DType::boolean: return *reinterpret_cast<const std::uint8_t*>(address) ? 1.f : 0.f;
    case DType::int32: {
      std::int32_t v;
      std::memcpy(&v, address, sizeof v);
      return static_cast<float>(v);
    }
    case DType::int64: {
      std::int64_t v;
      std::memcpy(&v, address, sizeof v);
      return static_cast<float>(v);
    }
  }
  return 0.f;
}

void check_transform(const ResizeTransform& t) {
  if (t.frame_height <= 0 || t.frame_width <= 0 || t.net_height <= 0 || t.net_width <= 0 || t.content_height <= 0 ||
      t.content_width <= 0 || t.content_height > t.net_height || t.content_width > t.net_width)
    throw std::invalid_argument("transform: inconsistent sizes");
}

void select_candidates(std::vector<Candidate>& candidates, const SelectionOptions& options) {
  if (options.max_instances < 0) throw std::invalid_argument("max_instances must be >= 0");
  const float threshold = options.score_threshold;
  candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                  [threshold](const Candidate& c) { return !(c.score >= threshold); }),
                   candidates.end());
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.score > b.score; });
  if (candidates.size() > static_cast<std::size_t>(options.max_instances))
    candidates.resize(static_cast<std::size_t>(options.max_instances));
}

namespace {

constexpr int kRowsPerItem = 48;

// Reads columns [x_begin, x_end) of one source row as float into seg[1 .. width], with zeros at
// seg[0] and seg[width + 1]: the taps of the output columns worth computing stay inside.
void load_segment(const SourceMask& m, int y, float* seg) {
  const int width = m.x_end - m.x_begin;
  const char* row = m.data + static_cast<std::int64_t>(y - m.origin_y) * m.row_stride +
                    static_cast<std::int64_t>(m.x_begin - m.origin_x) * m.col_stride;
  seg[0] = 0.f;
  seg[width + 1] = 0.f;
  float* out = seg + 1;
  const std::int64_t cs = m.col_stride;
  switch (m.dtype) {
    case DType::uint8:
      for (int i = 0; i < width; ++i) out[i] = static_cast<float>(*reinterpret_cast<const std::uint8_t*>(row + i * cs));
      break;
    case DType::boolean:
      for (int i = 0; i < width; ++i) out[i] = *reinterpret_cast<const std::uint8_t*>(row + i * cs) ? 1.f : 0.f;
      break;
    case DType::float32:
      if (cs == sizeof(float)) {
        std::memcpy(out, row, sizeof(float) * static_cast<std::size_t>(width));
      } else {
        for (int i = 0; i < width; ++i) std::memcpy(out + i, row + i * cs, sizeof(float));
      }
      break;
    default:
      for (int i = 0; i < width; ++i) out[i] = element_as_float(row + i * cs, m.dtype);
      break;
  }
}

// First output index whose taps reach [begin, end) and one past the last; taps are monotonic.
void output_range(const std::vector<math::LinearTap>& taps, int begin, int end, int& out_begin, int& out_end) {
  const int n = static_cast<int>(taps.size());
  int lo = 0;
  while (lo < n && taps[static_cast<std::size_t>(lo)].i1 < begin) ++lo;
  int hi = lo;
  while (hi < n && taps[static_cast<std::size_t>(hi)].i0 < end) ++hi;
  out_begin = lo;
  out_end = hi;
}

struct ItemStats {
  std::int64_t count = 0;
  int y_min = 0, y_max = -1, x_min = 0, x_max = -1;
};

}  // namespace

FrameInstances map_to_frame(const std::vector<Candidate>& candidates, const ResizeTransform& transform, int threads) {
  check_transform(transform);
  const int H = transform.frame_height, W = transform.frame_width;
  const int ch = transform.content_height, cw = transform.content_width;
  const std::int64_t plane = static_cast<std::int64_t>(H) * W;
  const std::int64_t n = static_cast<std::int64_t>(candidates.size());

  std::vector<math::LinearTap> xtaps(static_cast<std::size_t>(W)), ytaps(static_cast<std::size_t>(H));
  for (int x = 0; x < W; ++x) xtaps[static_cast<std::size_t>(x)] = math::cv_linear_tap_x(x, cw, W);
  for (int y = 0; y < H; ++y) ytaps[static_cast<std::size_t>(y)] = math::cv_linear_tap_y(y, ch, H);

  struct Range {
    int dy0 = 0, dy1 = 0, dx0 = 0, dx1 = 0;
  };
  std::vector<Range> ranges(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const SourceMask& m = candidates[static_cast<std::size_t>(i)].mask;
    Range& r = ranges[static_cast<std::size_t>(i)];
    if (m.empty()) continue;
    if (m.y_begin < 0 || m.x_begin < 0 || m.y_end > ch || m.x_end > cw)
      throw std::logic_error("map_to_frame: mask support outside the content region");
    output_range(ytaps, m.y_begin, m.y_end, r.dy0, r.dy1);
    output_range(xtaps, m.x_begin, m.x_end, r.dx0, r.dx1);
  }

  FrameInstances result;
  result.height = H;
  result.width = W;
  if (n > 0) result.masks.reset(new std::uint8_t[static_cast<std::size_t>(n * plane)]);

  const std::int64_t blocks = (H + kRowsPerItem - 1) / kRowsPerItem;
  const std::int64_t items = n * blocks;
  std::vector<ItemStats> stats(static_cast<std::size_t>(items));
  std::atomic<std::int64_t> next{0};
  const int workers = static_cast<int>(std::min<std::int64_t>(threads > 0 ? threads : default_thread_count(), items));

  parallel_for(workers, workers, 1, [&](std::int64_t wb, std::int64_t we) {
    std::vector<float> seg(static_cast<std::size_t>(cw) + 2);
    std::vector<float> rows(2 * static_cast<std::size_t>(W));
    for (std::int64_t w = wb; w < we; ++w) {
      for (;;) {
        const std::int64_t item = next.fetch_add(1);
        if (item >= items) break;
        const std::int64_t i = item / blocks;
        const int r0 = static_cast<int>((item % blocks) * kRowsPerItem);
        const int r1 = std::min(H, r0 + kRowsPerItem);
        const SourceMask& m = candidates[static_cast<std::size_t>(i)].mask;
        const Range rg = ranges[static_cast<std::size_t>(i)];
        std::uint8_t* out = result.masks.get() + i * plane;
        ItemStats& st = stats[static_cast<std::size_t>(item)];
        st.y_min = H;
        st.x_min = W;
        const int span = rg.dx1 - rg.dx0;
        // Two cached horizontal rows, least recently used evicted; key -1 = a row outside the
        // support (all zero), -2 = nothing cached. Output rows ask for source rows in order.
        int cached[2] = {-2, -2};
        std::int64_t used[2] = {0, 0}, clock = 0;
        float* slot[2] = {rows.data(), rows.data() + W};
        auto horizontal = [&](int sy) -> const float* {
          const int key = (sy < m.y_begin || sy >= m.y_end) ? -1 : sy;
          ++clock;
          for (int s = 0; s < 2; ++s)
            if (cached[s] == key) {
              used[s] = clock;
              return slot[s];
            }
          const int s = used[0] <= used[1] ? 0 : 1;
          float* dst = slot[s];
          if (key == -1) {
            std::fill(dst, dst + span, 0.f);
          } else {
            load_segment(m, sy, seg.data());
            const float* sg = seg.data();
            const int off = 1 - m.x_begin;  // seg holds source columns [x_begin - 1, x_end]
            for (int dx = rg.dx0; dx < rg.dx1; ++dx) {
              const math::LinearTap& t = xtaps[static_cast<std::size_t>(dx)];
              dst[dx - rg.dx0] = math::lerp_taps(sg[t.i0 + off], sg[t.i1 + off], t);
            }
          }
          cached[s] = key;
          used[s] = clock;
          return dst;
        };
        for (int y = r0; y < r1; ++y) {
          std::uint8_t* orow = out + static_cast<std::int64_t>(y) * W;
          if (y < rg.dy0 || y >= rg.dy1 || span <= 0) {
            std::memset(orow, 0, static_cast<std::size_t>(W));
            continue;
          }
          std::memset(orow, 0, static_cast<std::size_t>(rg.dx0));
          std::memset(orow + rg.dx1, 0, static_cast<std::size_t>(W - rg.dx1));
          const math::LinearTap& ty = ytaps[static_cast<std::size_t>(y)];
          const float* a = horizontal(ty.i0);
          const float* b = horizontal(ty.i1);
          const float b0 = ty.w0, b1 = ty.w1;
          std::uint8_t* o = orow + rg.dx0;
          int row_count = 0;
          for (int k = 0; k < span; ++k) {
            const std::uint8_t v = math::blend_above_half(a[k], b[k], b0, b1) ? 1 : 0;
            o[k] = v;
            row_count += v;
          }
          if (row_count) {
            int first = 0, last = span - 1;
            while (!o[first]) ++first;
            while (!o[last]) --last;
            st.count += row_count;
            st.y_min = std::min(st.y_min, y);
            st.y_max = std::max(st.y_max, y);
            st.x_min = std::min(st.x_min, rg.dx0 + first);
            st.x_max = std::max(st.x_max, rg.dx0 + last);
          }
        }
      }
    }
  });

  // Reduce per instance, then close the gaps left by masks that came out empty.
  std::int64_t kept = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    ItemStats total;
    total.y_min = H;
    total.x_min = W;
    for (std::int64_t b = 0; b < blocks; ++b) {
      const ItemStats& s = stats[static_cast<std::size_t>(i * blocks + b)];
      if (!s.count) continue;
      total.count += s.count;
      total.y_min = std::min(total.y_min, s.y_min);
      total.y_max = std::max(total.y_max, s.y_max);
      total.x_min = std::min(total.x_min, s.x_min);
      total.x_max = std::max(total.x_max, s.x_max);
    }
    if (!total.count) continue;
    if (kept != i)
      std::memmove(result.masks.get() + kept * plane, result.masks.get() + i * plane, static_cast<std::size_t>(plane));
    const Candidate& c = candidates[static_cast<std::size_t>(i)];
    result.scores.push_back(c.score);
    result.labels.push_back(c.label);
    result.query_indices.push_back(c.query);
    result.areas.push_back(total.count);
    result.boxes.push_back(static_cast<float>(total.x_min));
    result.boxes.push_back(static_cast<float>(total.y_min));
    result.boxes.push_back(static_cast<float>(total.x_max + 1));
    result.boxes.push_back(static_cast<float>(total.y_max + 1));
    ++kept;
  }
  result.count = kept;
  return result;
}

}  // namespace m2f::detail

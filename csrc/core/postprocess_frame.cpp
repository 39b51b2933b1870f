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

void output_range(const std::vector<math::MaskTap>& taps, int begin, int end, int& out_begin, int& out_end) {
  const int n = static_cast<int>(taps.size());
  int lo = 0;
  while (lo < n && taps[static_cast<std::size_t>(lo)].i1 < begin) ++lo;
  int hi = lo;
  while (hi < n && taps[static_cast<std::size_t>(hi)].i0 < end) ++hi;
  out_begin = lo;
  out_end = hi;
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

// The horizontal taps of one transform, with what the run-based pass of 0/1 rows needs.
struct HorizontalPlan {
  std::vector<math::MaskTap> taps;   // per output column
  std::vector<float> ones;             // lerp of two 1s = w0 + w1, exactly what a run of ones gives
  std::vector<int> first_i0_at_least;  // [x + 1], x in [-1, src + 1]: first column with i0 >= x
  std::vector<int> first_i1_at_least;  // [x + 1]: first column with i1 >= x
};

HorizontalPlan make_plan(int src, int dst) {
  HorizontalPlan p;
  p.taps.resize(static_cast<std::size_t>(dst));
  p.ones.resize(static_cast<std::size_t>(dst));
  for (int x = 0; x < dst; ++x) {
    p.taps[static_cast<std::size_t>(x)] = math::cv_linear_tap_x(x, src, dst);
    p.ones[static_cast<std::size_t>(x)] = math::lerp_taps(1.f, 1.f, p.taps[static_cast<std::size_t>(x)]);
  }
  p.first_i0_at_least.resize(static_cast<std::size_t>(src) + 3);
  p.first_i1_at_least.resize(static_cast<std::size_t>(src) + 3);
  int a = 0, b = 0;
  for (int x = -1; x <= src + 1; ++x) {
    while (a < dst && p.taps[static_cast<std::size_t>(a)].i0 < x) ++a;
    while (b < dst && p.taps[static_cast<std::size_t>(b)].i1 < x) ++b;
    p.first_i0_at_least[static_cast<std::size_t>(x + 1)] = a;
    p.first_i1_at_least[static_cast<std::size_t>(x + 1)] = b;
  }
  return p;
}

// One source row seen as runs of equal values over columns [x_begin, x_end): run i covers
// [begin[i], begin[i + 1]) (the last ends at x_end). Runs of exactly 0 or 1 are what masks are
// made of, and the scan skips through them a word at a time.
struct RowRuns {
  const char* row = nullptr;  // address of column origin_x of this row
  std::vector<int> begin;
  std::vector<float> value;
  int first_nonzero = 0, last_nonzero = -1;
};

inline float value_at(const SourceMask& m, const RowRuns& r, int x) {
  if (x < m.x_begin || x >= m.x_end) return 0.f;
  const char* p = r.row + static_cast<std::int64_t>(x - m.origin_x) * m.col_stride;
  if (m.dtype == DType::float32) {
    float v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  return element_as_float(p, m.dtype);
}

// How many elements from x on (at most n) have exactly the bit pattern of the value at x, for
// dense rows; 8 or 32 bytes per step. Returns 0 when the pattern is not a uniform 0 or 1.
int skip_equal_words(const SourceMask& m, const char* p, int n) {
  std::uint64_t pattern;
  std::size_t item;
  if (m.dtype == DType::float32 && m.col_stride == 4) {
    std::uint32_t bits;
    std::memcpy(&bits, p, 4);
    if (bits != 0u && bits != 0x3f800000u) return 0;
    pattern = (static_cast<std::uint64_t>(bits) << 32) | bits;
    item = 4;
  } else if ((m.dtype == DType::uint8 || m.dtype == DType::boolean) && m.col_stride == 1) {
    const std::uint8_t byte = static_cast<std::uint8_t>(*p);
    if (byte > 1) return 0;
    pattern = byte * 0x0101010101010101ull;
    item = 1;
  } else if (m.dtype == DType::float16 && m.col_stride == 2) {
    std::uint16_t bits;
    std::memcpy(&bits, p, 2);
    if (bits != 0u && bits != 0x3c00u) return 0;
    pattern = bits * 0x0001000100010001ull;
    item = 2;
  } else {
    return 0;
  }
  const std::size_t bytes = static_cast<std::size_t>(n) * item;
  std::size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    std::uint64_t w0, w1, w2, w3;  // separate words stay in registers
    std::memcpy(&w0, p + i, 8);
    std::memcpy(&w1, p + i + 8, 8);
    std::memcpy(&w2, p + i + 16, 8);
    std::memcpy(&w3, p + i + 24, 8);
    if (((w0 ^ pattern) | (w1 ^ pattern) | (w2 ^ pattern) | (w3 ^ pattern)) != 0) break;
  }
  for (; i + 8 <= bytes; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != pattern) break;
  }
  return static_cast<int>(i / item);
}

void find_runs(const SourceMask& m, int y, RowRuns& r) {
  r.row = m.data + static_cast<std::int64_t>(y - m.origin_y) * m.row_stride;
  r.begin.clear();
  r.value.clear();
  r.first_nonzero = m.x_end;
  r.last_nonzero = -1;
  int x = m.x_begin;
  while (x < m.x_end) {
    const float v = value_at(m, r, x);
    const char* p = r.row + static_cast<std::int64_t>(x - m.origin_x) * m.col_stride;
    int end = x + std::max(1, skip_equal_words(m, p, m.x_end - x));
    while (end < m.x_end && value_at(m, r, end) == v) ++end;
    r.begin.push_back(x);
    r.value.push_back(v);
    if (v != 0.f) {  // NaN counts as nonzero: it is blended like any other value
      r.first_nonzero = std::min(r.first_nonzero, x);
      r.last_nonzero = end - 1;
    }
    x = end;
  }
}

// Output columns [lo, hi) where a horizontal row is exactly 0 (one = 0) or a run of ones (one = 1).
struct ConstSpan {
  int lo, hi;
  std::uint8_t one;
};
constexpr int kMinSpan = 8;       // shorter spans are cheaper to blend than to track
constexpr int kFar = 1 << 30;     // a span end beyond any column

// One source row's horizontal pass over output columns [dx0, dx1) into dst (indexed by output
// column). Output columns whose two taps sit in one run of 0s or 1s get the run's value by
// memset / memcpy (the same float the blend gives: 0, or w0 + w1) and are listed in spans;
// the others are blended.
void horizontal_row(const HorizontalPlan& plan, const SourceMask& m, const RowRuns& r, int dx0, int dx1,
                    float* dst, std::vector<ConstSpan>& spans) {
  auto blend = [&](int from, int to) {
    for (int dx = from; dx < to; ++dx) {
      const math::MaskTap& t = plan.taps[static_cast<std::size_t>(dx)];
      dst[dx] = math::lerp_taps(value_at(m, r, t.i0), value_at(m, r, t.i1), t);
    }
  };
  int dx = dx0;
  const std::size_t runs = r.begin.size();
  for (std::size_t i = 0; i < runs && dx < dx1; ++i) {
    const float v = r.value[i];
    if (v != 0.f && v != 1.f) continue;
    const int x = r.begin[i], end = i + 1 < runs ? r.begin[i + 1] : m.x_end;
    const int lo = std::max(dx, plan.first_i0_at_least[static_cast<std::size_t>(x + 1)]);
    const int hi = std::min(dx1, plan.first_i1_at_least[static_cast<std::size_t>(end + 1)]);
    if (lo >= hi) continue;
    blend(dx, lo);
    if (v == 0.f)
      std::memset(dst + lo, 0, sizeof(float) * static_cast<std::size_t>(hi - lo));
    else
      std::memcpy(dst + lo, plan.ones.data() + lo, sizeof(float) * static_cast<std::size_t>(hi - lo));
    if (hi - lo >= kMinSpan) spans.push_back({lo, hi, static_cast<std::uint8_t>(v == 0.f ? 0 : 1)});
    dx = hi;
  }
  blend(dx, dx1);
}

// The vertical blend and 0.5 threshold of output columns [u0, u1); returns how many are set.
int blend_row(const float* __restrict a, const float* __restrict b, float b0, float b1, int u0, int u1,
              std::uint8_t* __restrict out) {
  int count = 0;
  for (int k = u0; k < u1; ++k) {
    const std::uint8_t v = math::blend_above_half(a[k], b[k], b0, b1) ? 1 : 0;
    out[k] = v;
    count += v;
  }
  return count;
}

// blend_row over [u0, u1), except where both rows sit in constant spans of the same kind: there
// the blend is known (both 0 -> 0; both runs of ones -> about 1, > 0.5) and is a memset.
int blend_row_spans(const float* a, const float* b, float b0, float b1, int u0, int u1,
                    const std::vector<ConstSpan>& sa, const std::vector<ConstSpan>& sb, std::uint8_t* out) {
  int count = 0;
  std::size_t i = 0, j = 0;
  int k = u0;
  while (k < u1) {
    while (i < sa.size() && sa[i].hi <= k) ++i;
    while (j < sb.size() && sb[j].hi <= k) ++j;
    const bool in_a = i < sa.size() && sa[i].lo <= k;
    const bool in_b = j < sb.size() && sb[j].lo <= k;
    if (in_a && in_b && sa[i].one == sb[j].one) {
      const int end = std::min(std::min(sa[i].hi, sb[j].hi), u1);
      std::memset(out + k, sa[i].one, static_cast<std::size_t>(end - k));
      if (sa[i].one) count += end - k;
      k = end;
      continue;
    }
    int end = u1;
    if (i < sa.size()) end = std::min(end, in_a ? sa[i].hi : sa[i].lo);
    if (j < sb.size()) end = std::min(end, in_b ? sb[j].hi : sb[j].lo);
    count += blend_row(a, b, b0, b1, k, end, out);
    k = end;
  }
  return count;
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

  const HorizontalPlan plan = make_plan(cw, W);
  const std::vector<math::MaskTap>& xtaps = plan.taps;
  std::vector<math::MaskTap> ytaps(static_cast<std::size_t>(H));
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
  if (n > 0) result.masks = MaskBuffer::allocate(static_cast<std::size_t>(n * plane));

  const std::int64_t blocks = (H + kRowsPerItem - 1) / kRowsPerItem;
  const std::int64_t items = n * blocks;
  std::vector<ItemStats> stats(static_cast<std::size_t>(items));
  std::atomic<std::int64_t> next{0};
  const int workers = static_cast<int>(std::min<std::int64_t>(threads > 0 ? threads : default_thread_count(), items));

  parallel_for(workers, workers, 1, [&](std::int64_t wb, std::int64_t we) {
    RowRuns runs;
    std::vector<float> rows(2 * static_cast<std::size_t>(W), 0.f);
    // Two cached horizontal rows (least recently used evicted; output rows ask for source rows in
    // order). Each holds its nonzero output-column extent [lo, hi); its buffer (indexed by output
    // column) is zero outside [lo, hi), so blends outside read zeros.
    struct Slot {
      int key = -2;  // source row held; -1 = a zero row, -2 = nothing
      std::int64_t used = 0;
      int lo = 0, hi = 0;
      float* buffer = nullptr;
      std::vector<ConstSpan> spans;  // sorted; the zeros outside [lo, hi) included
    };
    Slot slots[2];
    slots[0].buffer = rows.data();
    slots[1].buffer = rows.data() + W;
    std::int64_t clock = 0;
    for (std::int64_t w = wb; w < we; ++w) {
      for (;;) {
        const std::int64_t item = next.fetch_add(1);
        if (item >= items) break;
        const std::int64_t i = item / blocks;
        const int r0 = static_cast<int>((item % blocks) * kRowsPerItem);
        const int r1 = std::min(H, r0 + kRowsPerItem);
        const SourceMask& m = candidates[static_cast<std::size_t>(i)].mask;
        const Range rg = ranges[static_cast<std::size_t>(i)];
        std::uint8_t* out = result.masks.data() + i * plane;
        ItemStats& st = stats[static_cast<std::size_t>(item)];
        st.y_min = H;
        st.x_min = W;
        // The buffers outlive the item: forget what rows they hold, keep their extents to clear.
        for (Slot& slot : slots) slot.key = -2;
        auto horizontal = [&](int sy) -> const Slot& {
          const int key = (sy < m.y_begin || sy >= m.y_end) ? -1 : sy;
          ++clock;
          for (Slot& s : slots)
            if (s.key == key) {
              s.used = clock;
              return s;
            }
          Slot& s = slots[0].used <= slots[1].used ? slots[0] : slots[1];
          int lo = 0, hi = 0;
          if (key >= 0) {
            find_runs(m, sy, runs);
            if (runs.first_nonzero <= runs.last_nonzero) {
              // output columns whose taps reach a nonzero value; elsewhere the pass is exactly 0
              lo = std::max(rg.dx0, plan.first_i1_at_least[static_cast<std::size_t>(runs.first_nonzero + 1)]);
              hi = std::min(rg.dx1, plan.first_i0_at_least[static_cast<std::size_t>(runs.last_nonzero + 2)]);
              if (lo > hi) lo = hi;
            }
          }
          // clear what the previous row left outside the new extent, then fill the extent
          if (s.lo < s.hi) {
            if (lo < hi) {
              if (s.lo < lo) std::memset(s.buffer + s.lo, 0, sizeof(float) * static_cast<std::size_t>(std::min(lo, s.hi) - s.lo));
              if (s.hi > hi) {
                const int from = std::max(hi, s.lo);
                std::memset(s.buffer + from, 0, sizeof(float) * static_cast<std::size_t>(s.hi - from));
              }
            } else {
              std::memset(s.buffer + s.lo, 0, sizeof(float) * static_cast<std::size_t>(s.hi - s.lo));
            }
          }
          s.spans.clear();
          if (lo < hi) {
            s.spans.push_back({-kFar, lo, 0});
            horizontal_row(plan, m, runs, lo, hi, s.buffer, s.spans);
            s.spans.push_back({hi, kFar, 0});
          } else {
            s.spans.push_back({-kFar, kFar, 0});
          }
          s.key = key;
          s.used = clock;
          s.lo = lo;
          s.hi = hi;
          return s;
        };
        for (int y = r0; y < r1; ++y) {
          std::uint8_t* orow = out + static_cast<std::int64_t>(y) * W;
          int u0 = 0, u1 = 0;
          const Slot* sa = nullptr;
          const Slot* sb = nullptr;
          float b0 = 0.f, b1 = 0.f;
          if (y >= rg.dy0 && y < rg.dy1 && rg.dx0 < rg.dx1) {
            const math::MaskTap& ty = ytaps[static_cast<std::size_t>(y)];
            sa = &horizontal(ty.i0);
            sb = &horizontal(ty.i1);
            b0 = ty.w0;
            b1 = ty.w1;
            if (sa->lo < sa->hi && sb->lo < sb->hi) {
              u0 = std::min(sa->lo, sb->lo);
              u1 = std::max(sa->hi, sb->hi);
            } else if (sa->lo < sa->hi) {
              u0 = sa->lo;
              u1 = sa->hi;
            } else if (sb->lo < sb->hi) {
              u0 = sb->lo;
              u1 = sb->hi;
            }
          }
          if (u0 >= u1) {
            std::memset(orow, 0, static_cast<std::size_t>(W));
            continue;
          }
          std::memset(orow, 0, static_cast<std::size_t>(u0));
          std::memset(orow + u1, 0, static_cast<std::size_t>(W - u1));
          const int row_count = blend_row_spans(sa->buffer, sb->buffer, b0, b1, u0, u1, sa->spans, sb->spans, orow);
          if (row_count) {
            int first = u0, last = u1 - 1;
            while (!orow[first]) ++first;
            while (!orow[last]) --last;
            st.count += row_count;
            st.y_min = std::min(st.y_min, y);
            st.y_max = std::max(st.y_max, y);
            st.x_min = std::min(st.x_min, first);
            st.x_max = std::max(st.x_max, last);
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
      std::memmove(result.masks.data() + kept * plane, result.masks.data() + i * plane, static_cast<std::size_t>(plane));
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

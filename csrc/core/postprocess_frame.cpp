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

// The vertical blend and 0.5 threshold of output columns [u0, u1) into out[0, u1 - u0); returns how
// many are set.
int blend_row(const float* __restrict a, const float* __restrict b, float b0, float b1, int u0, int u1,
              std::uint8_t* __restrict out) {
  int count = 0;
  for (int k = u0; k < u1; ++k) {
    const std::uint8_t v = math::blend_above_half(a[k], b[k], b0, b1) ? 1 : 0;
    out[k - u0] = v;
    count += v;
  }
  return count;
}

// blend_row over [u0, u1), except where both rows sit in constant spans of the same kind: there
// the blend is known (both 0 -> 0; both runs of ones -> about 1, > 0.5) and is a memset. Output
// column k goes to out[k - out_origin].
int blend_row_spans(const float* a, const float* b, float b0, float b1, int u0, int u1,
                    const std::vector<ConstSpan>& sa, const std::vector<ConstSpan>& sb, std::uint8_t* out,
                    int out_origin) {
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
      std::memset(out + (k - out_origin), sa[i].one, static_cast<std::size_t>(end - k));
      if (sa[i].one) count += end - k;
      k = end;
      continue;
    }
    int end = u1;
    if (i < sa.size()) end = std::min(end, in_a ? sa[i].hi : sa[i].lo);
    if (j < sb.size()) end = std::min(end, in_b ? sb[j].hi : sb[j].lo);
    count += blend_row(a, b, b0, b1, k, end, out + (k - out_origin));
    k = end;
  }
  return count;
}

// The pixels of one item (rows [y0, y1) of one instance's window): mask count and tight box.
struct ItemStats {
  std::int64_t count = 0;
  int y_min = 0, y_max = -1, x_min = 0, x_max = -1;
};

// The first / one past the last byte of p[0, bytes) that is not zero, 8 bytes at a time (bytes
// when all are zero).
std::size_t first_nonzero_byte(const char* p, std::size_t bytes) {
  std::size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    std::uint64_t w[4];
    std::memcpy(w, p + i, 32);
    if ((w[0] | w[1] | w[2] | w[3]) != 0) break;
  }
  for (; i + 8 <= bytes; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) break;
  }
  while (i < bytes && p[i] == 0) ++i;
  return i;
}

std::size_t end_of_nonzero_bytes(const char* p, std::size_t bytes) {
  std::size_t i = bytes;
  for (; i >= 8; i -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i - 8, 8);
    if (w != 0) break;
  }
  while (i > 0 && p[i - 1] == 0) --i;
  return i;
}

// Shrinks the mask's support [y_begin, y_end) x [x_begin, x_end) to the box of its nonzero values
// (NaN counts as nonzero; a -0.0 at the edge of a dense row may be kept inside: a wider support
// only costs time). Dense rows are searched for nonzero bytes a word at a time, from both ends.
void tighten_support(SourceMask& m) {
  if (m.empty()) return;
  const std::size_t item = dtype_size(m.dtype);
  const bool dense = m.col_stride == static_cast<std::int64_t>(item);
  const std::size_t bytes = item * static_cast<std::size_t>(m.x_end - m.x_begin);
  int y_min = m.y_end, y_max = -1, x_min = m.x_end, x_max = -1;
  for (int y = m.y_begin; y < m.y_end; ++y) {
    const char* row = m.data + static_cast<std::int64_t>(y - m.origin_y) * m.row_stride;
    int first = m.x_begin, last = m.x_end - 1;
    if (dense) {
      const char* start = row + static_cast<std::int64_t>(m.x_begin - m.origin_x) * m.col_stride;
      const std::size_t lo = first_nonzero_byte(start, bytes);
      if (lo == bytes) continue;
      const std::size_t hi = end_of_nonzero_bytes(start, bytes);
      first = m.x_begin + static_cast<int>(lo / item);
      last = m.x_begin + static_cast<int>((hi - 1) / item);
    } else {
      auto at = [&](int x) {
        return element_as_float(row + static_cast<std::int64_t>(x - m.origin_x) * m.col_stride, m.dtype);
      };
      while (first < m.x_end && at(first) == 0.f) ++first;
      if (first == m.x_end) continue;
      while (at(last) == 0.f) --last;
    }
    y_min = std::min(y_min, y);
    y_max = y;
    x_min = std::min(x_min, first);
    x_max = std::max(x_max, last);
  }
  if (y_max < 0) {
    m.y_begin = m.y_end = m.x_begin = m.x_end = 0;
    return;
  }
  m.y_begin = y_min;
  m.y_end = y_max + 1;
  m.x_begin = x_min;
  m.x_end = x_max + 1;
}

// The frame pixels one instance's mask can reach, and where its window sits in the scratch.
struct FrameWindow {
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0;
  std::int64_t offset = 0;
  bool empty() const { return y0 >= y1 || x0 >= x1; }
  std::int64_t area() const { return empty() ? 0 : static_cast<std::int64_t>(y1 - y0) * (x1 - x0); }
};

struct Geometry {
  HorizontalPlan plan;              // frame columns from content columns
  std::vector<math::MaskTap> ytaps;  // frame rows from content rows
};

// Each candidate's frame window, from its (tightened) support, laid out back to back.
std::vector<FrameWindow> plan_windows(const std::vector<Candidate>& candidates, const Geometry& g, int ch, int cw,
                                      std::int64_t& total) {
  std::vector<FrameWindow> windows(candidates.size());
  total = 0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const SourceMask& m = candidates[i].mask;
    FrameWindow& w = windows[i];
    if (m.empty()) continue;
    if (m.y_begin < 0 || m.x_begin < 0 || m.y_end > ch || m.x_end > cw)
      throw std::logic_error("map_to_frame: mask support outside the content region");
    const int H = static_cast<int>(g.ytaps.size()), W = static_cast<int>(g.plan.taps.size());
    math::cv_linear_output_range(true, ch, H, m.y_begin, m.y_end, w.y0, w.y1);
    math::cv_linear_output_range(false, cw, W, m.x_begin, m.x_end, w.x0, w.x1);
    w.offset = total;
    total += w.area();
  }
  return windows;
}

// The horizontal passes of one instance's source rows, two cached (least recently used evicted;
// output rows ask for source rows in order). Each slot holds its nonzero output-column extent
// [lo, hi); its buffer (indexed by frame column) is zero outside [lo, hi), so blends outside read
// zeros. One per worker: the buffers outlive the items.
class RowCache {
 public:
  struct Slot {
    int key = -2;  // source row held; -1 = a zero row, -2 = nothing
    std::int64_t used = 0;
    int lo = 0, hi = 0;
    float* buffer = nullptr;
    std::vector<ConstSpan> spans;  // sorted; the zeros outside [lo, hi) included
  };

  RowCache(const HorizontalPlan& plan, int frame_width)
      : plan_(plan), rows_(2 * static_cast<std::size_t>(frame_width), 0.f) {
    slots_[0].buffer = rows_.data();
    slots_[1].buffer = rows_.data() + frame_width;
  }

  // A new instance: forget which rows the buffers hold, keep their extents to clear.
  void start(const SourceMask& mask, const FrameWindow& window) {
    mask_ = &mask;
    window_ = window;
    for (Slot& slot : slots_) slot.key = -2;
  }

  const Slot& horizontal(int sy) {
    const SourceMask& m = *mask_;
    const int key = (sy < m.y_begin || sy >= m.y_end) ? -1 : sy;
    ++clock_;
    for (Slot& s : slots_)
      if (s.key == key) {
        s.used = clock_;
        return s;
      }
    Slot& s = slots_[0].used <= slots_[1].used ? slots_[0] : slots_[1];
    int lo = 0, hi = 0;
    if (key >= 0) nonzero_extent(sy, lo, hi);
    clear_outside(s, lo, hi);
    s.spans.clear();
    if (lo < hi) {
      s.spans.push_back({-kFar, lo, 0});
      horizontal_row(plan_, m, runs_, lo, hi, s.buffer, s.spans);
      s.spans.push_back({hi, kFar, 0});
    } else {
      s.spans.push_back({-kFar, kFar, 0});
    }
    s.key = key;
    s.used = clock_;
    s.lo = lo;
    s.hi = hi;
    return s;
  }

 private:
  // The output columns whose taps reach a nonzero value of source row sy; elsewhere the pass is 0.
  void nonzero_extent(int sy, int& lo, int& hi) {
    find_runs(*mask_, sy, runs_);
    lo = hi = 0;
    if (runs_.first_nonzero > runs_.last_nonzero) return;
    lo = std::max(window_.x0, plan_.first_i1_at_least[static_cast<std::size_t>(runs_.first_nonzero + 1)]);
    hi = std::min(window_.x1, plan_.first_i0_at_least[static_cast<std::size_t>(runs_.last_nonzero + 2)]);
    if (lo > hi) lo = hi;
  }

  // Zeroes what the slot's previous row left outside the new extent [lo, hi).
  static void clear_outside(const Slot& s, int lo, int hi) {
    if (s.lo >= s.hi) return;
    if (lo >= hi) {
      std::memset(s.buffer + s.lo, 0, sizeof(float) * static_cast<std::size_t>(s.hi - s.lo));
      return;
    }
    if (s.lo < lo) std::memset(s.buffer + s.lo, 0, sizeof(float) * static_cast<std::size_t>(std::min(lo, s.hi) - s.lo));
    if (s.hi > hi) {
      const int from = std::max(hi, s.lo);
      std::memset(s.buffer + from, 0, sizeof(float) * static_cast<std::size_t>(s.hi - from));
    }
  }

  const HorizontalPlan& plan_;
  std::vector<float> rows_;
  Slot slots_[2];
  std::int64_t clock_ = 0;
  RowRuns runs_;
  const SourceMask* mask_ = nullptr;
  FrameWindow window_;
};

// Frame rows [r0, r1) of one instance's window, written into its crop of the scratch (row-major,
// window-wide); returns the item's count and tight box.
ItemStats map_rows(RowCache& cache, const Geometry& g, const SourceMask& m, const FrameWindow& w, int r0, int r1,
                   std::uint8_t* scratch) {
  ItemStats st;
  st.y_min = w.y1;
  st.x_min = w.x1;
  cache.start(m, w);
  const int ww = w.x1 - w.x0;
  for (int y = r0; y < r1; ++y) {
    std::uint8_t* orow = scratch + w.offset + static_cast<std::int64_t>(y - w.y0) * ww;
    const math::MaskTap& ty = g.ytaps[static_cast<std::size_t>(y)];
    const RowCache::Slot& sa = cache.horizontal(ty.i0);
    const RowCache::Slot& sb = cache.horizontal(ty.i1);
    int u0 = 0, u1 = 0;
    if (sa.lo < sa.hi && sb.lo < sb.hi) {
      u0 = std::min(sa.lo, sb.lo);
      u1 = std::max(sa.hi, sb.hi);
    } else if (sa.lo < sa.hi) {
      u0 = sa.lo;
      u1 = sa.hi;
    } else if (sb.lo < sb.hi) {
      u0 = sb.lo;
      u1 = sb.hi;
    }
    if (u0 >= u1) {
      std::memset(orow, 0, static_cast<std::size_t>(ww));
      continue;
    }
    std::memset(orow, 0, static_cast<std::size_t>(u0 - w.x0));
    std::memset(orow + (u1 - w.x0), 0, static_cast<std::size_t>(w.x1 - u1));
    const int row_count = blend_row_spans(sa.buffer, sb.buffer, ty.w0, ty.w1, u0, u1, sa.spans, sb.spans, orow, w.x0);
    if (row_count) {
      int first = u0, last = u1 - 1;
      while (!orow[first - w.x0]) ++first;
      while (!orow[last - w.x0]) --last;
      st.count += row_count;
      st.y_min = std::min(st.y_min, y);
      st.y_max = std::max(st.y_max, y);
      st.x_min = std::min(st.x_min, first);
      st.x_max = std::max(st.x_max, last);
    }
  }
  return st;
}

// One unit of parallel work: a block of rows of one instance's window.
struct WorkItem {
  std::int64_t instance;
  int r0, r1;
};

std::vector<WorkItem> split_rows(const std::vector<FrameWindow>& windows) {
  std::vector<WorkItem> items;
  for (std::size_t i = 0; i < windows.size(); ++i) {
    const FrameWindow& w = windows[i];
    if (w.empty()) continue;
    for (int r0 = w.y0; r0 < w.y1; r0 += kRowsPerItem)
      items.push_back({static_cast<std::int64_t>(i), r0, std::min(w.y1, r0 + kRowsPerItem)});
  }
  return items;
}

// Reduces the items' stats per instance, drops the instances that came out empty, and moves each
// kept one's tight box to the front of the scratch, crop after crop (every destination lies at or
// before its source: forward row moves are safe).
FrameInstances collect_instances(const std::vector<Candidate>& candidates, const std::vector<FrameWindow>& windows,
                                 const std::vector<WorkItem>& items, const std::vector<ItemStats>& stats,
                                 MaskBuffer&& scratch, int H, int W) {
  const std::size_t n = candidates.size();
  std::vector<ItemStats> totals(n);
  for (ItemStats& t : totals) {
    t.y_min = H;
    t.x_min = W;
  }
  for (std::size_t k = 0; k < items.size(); ++k) {
    const ItemStats& s = stats[k];
    if (!s.count) continue;
    ItemStats& t = totals[static_cast<std::size_t>(items[k].instance)];
    t.count += s.count;
    t.y_min = std::min(t.y_min, s.y_min);
    t.y_max = std::max(t.y_max, s.y_max);
    t.x_min = std::min(t.x_min, s.x_min);
    t.x_max = std::max(t.x_max, s.x_max);
  }
  FrameInstances result;
  result.height = H;
  result.width = W;
  std::int64_t used = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const ItemStats& t = totals[i];
    if (!t.count) continue;
    const FrameWindow& w = windows[i];
    const int cw = t.x_max + 1 - t.x_min, wide = w.x1 - w.x0;
    for (int y = t.y_min; y <= t.y_max; ++y)
      std::memmove(scratch.data() + used + static_cast<std::int64_t>(y - t.y_min) * cw,
                   scratch.data() + w.offset + static_cast<std::int64_t>(y - w.y0) * wide + (t.x_min - w.x0),
                   static_cast<std::size_t>(cw));
    used += static_cast<std::int64_t>(t.y_max + 1 - t.y_min) * cw;
    const Candidate& c = candidates[i];
    result.scores.push_back(c.score);
    result.labels.push_back(c.label);
    result.query_indices.push_back(c.query);
    result.areas.push_back(t.count);
    result.boxes.push_back(static_cast<float>(t.x_min));
    result.boxes.push_back(static_cast<float>(t.y_min));
    result.boxes.push_back(static_cast<float>(t.x_max + 1));
    result.boxes.push_back(static_cast<float>(t.y_max + 1));
    result.crop_offsets.push_back(used);
  }
  result.count = static_cast<std::int64_t>(result.scores.size());
  result.crops = std::move(scratch);
  return result;
}

}  // namespace

FrameInstances map_to_frame(std::vector<Candidate> candidates, const ResizeTransform& transform, int threads) {
  check_transform(transform);
  const int H = transform.frame_height, W = transform.frame_width;
  const int ch = transform.content_height, cw = transform.content_width;
  const int workers_wanted = threads > 0 ? threads : default_thread_count();

  // Where each mask has anything: at network size, read once; the frame window follows from it.
  parallel_for(static_cast<std::int64_t>(candidates.size()), workers_wanted, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) tighten_support(candidates[static_cast<std::size_t>(i)].mask);
  });
  Geometry g{make_plan(cw, W), std::vector<math::MaskTap>(static_cast<std::size_t>(H))};
  for (int y = 0; y < H; ++y) g.ytaps[static_cast<std::size_t>(y)] = math::cv_linear_tap_y(y, ch, H);
  std::int64_t total = 0;
  const std::vector<FrameWindow> windows = plan_windows(candidates, g, ch, cw, total);

  MaskBuffer scratch = MaskBuffer::allocate(static_cast<std::size_t>(std::max<std::int64_t>(total, 1)));
  const std::vector<WorkItem> items = split_rows(windows);
  std::vector<ItemStats> stats(items.size());
  std::atomic<std::size_t> next{0};
  const int workers = static_cast<int>(std::min<std::int64_t>(workers_wanted, static_cast<std::int64_t>(items.size())));
  parallel_for(workers, workers, 1, [&](std::int64_t, std::int64_t) {
    RowCache cache(g.plan, W);
    for (std::size_t k = next.fetch_add(1); k < items.size(); k = next.fetch_add(1)) {
      const WorkItem& item = items[k];
      const auto i = static_cast<std::size_t>(item.instance);
      stats[k] = map_rows(cache, g, candidates[i].mask, windows[i], item.r0, item.r1, scratch.data());
    }
  });
  return collect_instances(candidates, windows, items, stats, std::move(scratch), H, W);
}

}  // namespace m2f::detail

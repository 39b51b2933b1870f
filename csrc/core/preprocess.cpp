// Fused CPU preprocessing. Separable bilinear resize: each needed source row is resampled
// horizontally once into float planes (RGB order), then every output row blends two such rows
// vertically and normalises while writing the planar output. Rows are split over threads.
#include "m2f/preprocess.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "m2f/math/resize.hpp"
#include "m2f/parallel.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define M2F_HAVE_F16C_DISPATCH 1
#endif

namespace m2f {
namespace {

using math::ChannelAffine;
using math::ResizeTap;

struct FramePlan;
using RowResampler = void (*)(const std::uint8_t* packed_row, const FramePlan& plan, float* const planes[3]);

// Everything the output rows of one frame share.
struct FramePlan {
  const std::uint8_t* data = nullptr;  // element (0, 0, 0)
  std::int64_t row_stride = 0, pixel_stride = 0, channel_stride = 0;  // bytes, any sign
  int height = 0, width = 0, channels = 0;
  bool packed_rows = false;  // a row's pixels and channels are adjacent bytes: read it in place
  ResizeTransform transform;
  std::vector<int> x_offset0, x_offset1;  // byte offsets of the two taps within a packed row
  std::vector<float> x_weight0, x_weight1;
  int vector_width = 0;  // leading output columns whose taps can be read as whole 4-byte words
  std::vector<ResizeTap> y_taps;
  RowResampler resample = nullptr;
  int planes = 3;  // 1 for gray: one plane feeds R, G and B
};

#if defined(__GNUC__)
// GCC/Clang vector extensions: one source that lowers to SSE on x86-64 and NEON on ARM.
#define M2F_FLOAT4_VECTORS 1
typedef float Float4 __attribute__((vector_size(16)));
typedef int Int4 __attribute__((vector_size(16)));

inline Float4 load4(const float* p) {
  Float4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store4(float* p, Float4 v) { std::memcpy(p, &v, sizeof v); }

// The 4 bytes at p as 4 floats.
inline Float4 load4_bytes(const std::uint8_t* p) {
#if defined(__SSE2__)
  std::int32_t word;
  std::memcpy(&word, p, sizeof word);
  const __m128i zero = _mm_setzero_si128();
  const __m128i words = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(word), zero), zero);
  return static_cast<Float4>(_mm_cvtepi32_ps(words));
#else
  typedef std::uint8_t Byte4 __attribute__((vector_size(4)));
  Byte4 bytes;
  std::memcpy(&bytes, p, sizeof bytes);
  return __builtin_convertvector(bytes, Float4);
#endif
}

#if defined(__clang__)
#define M2F_SHUFFLE(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define M2F_SHUFFLE(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, Int4{i0, i1, i2, i3})
#endif

// Four pixels (a vector of the first 4 channels each) -> the first 3 channels, 4 pixels each.
inline void transpose_pixels(Float4 p0, Float4 p1, Float4 p2, Float4 p3, Float4 channel[3]) {
  const Float4 low01 = M2F_SHUFFLE(p0, p1, 0, 4, 1, 5);
  const Float4 low23 = M2F_SHUFFLE(p2, p3, 0, 4, 1, 5);
  const Float4 high01 = M2F_SHUFFLE(p0, p1, 2, 6, 3, 7);
  const Float4 high23 = M2F_SHUFFLE(p2, p3, 2, 6, 3, 7);
  channel[0] = M2F_SHUFFLE(low01, low23, 0, 1, 4, 5);
  channel[1] = M2F_SHUFFLE(low01, low23, 2, 3, 6, 7);
  channel[2] = M2F_SHUFFLE(high01, high23, 0, 1, 4, 5);
}
#endif

// Horizontal pass over one packed uint8 row. R, G, B are the source channels of each plane.
// Four output pixels at a time: their left and right taps are loaded as whole 4-byte pixels,
// widened, transposed to channels and blended lane by lane with the same arithmetic as the
// scalar tail, so the result does not depend on the path.
template <int C, int R, int G, int B>
void resample_row_rgb(const std::uint8_t* row, const FramePlan& plan, float* const planes[3]) {
  static_assert(C == 3 || C == 4, "resample_row_rgb takes 3 or 4 channels");
  const int* offset0 = plan.x_offset0.data();
  const int* offset1 = plan.x_offset1.data();
  const float* weight0 = plan.x_weight0.data();
  const float* weight1 = plan.x_weight1.data();
  float* red = planes[0];
  float* green = planes[1];
  float* blue = planes[2];
  const int width = plan.transform.content_width;
  int x = 0;
#if defined(M2F_FLOAT4_VECTORS)
  for (; x + 4 <= plan.vector_width; x += 4) {
    Float4 left[3], right[3];
    transpose_pixels(load4_bytes(row + offset0[x]), load4_bytes(row + offset0[x + 1]),
                     load4_bytes(row + offset0[x + 2]), load4_bytes(row + offset0[x + 3]), left);
    transpose_pixels(load4_bytes(row + offset1[x]), load4_bytes(row + offset1[x + 1]),
                     load4_bytes(row + offset1[x + 2]), load4_bytes(row + offset1[x + 3]), right);
    const Float4 w0 = load4(weight0 + x), w1 = load4(weight1 + x);
    store4(red + x, left[R] * w0 + right[R] * w1);
    store4(green + x, left[G] * w0 + right[G] * w1);
    store4(blue + x, left[B] * w0 + right[B] * w1);
  }
#endif
  for (; x < width; ++x) {
    const std::uint8_t* left = row + offset0[x];
    const std::uint8_t* right = row + offset1[x];
    const float w0 = weight0[x], w1 = weight1[x];
    red[x] = math::blend(static_cast<float>(left[R]), static_cast<float>(right[R]), w0, w1);
    green[x] = math::blend(static_cast<float>(left[G]), static_cast<float>(right[G]), w0, w1);
    blue[x] = math::blend(static_cast<float>(left[B]), static_cast<float>(right[B]), w0, w1);
  }
}

void resample_row_gray(const std::uint8_t* row, const FramePlan& plan, float* const planes[3]) {
  const int* offset0 = plan.x_offset0.data();
  const int* offset1 = plan.x_offset1.data();
  const float* weight0 = plan.x_weight0.data();
  const float* weight1 = plan.x_weight1.data();
  float* gray = planes[0];
  const int width = plan.transform.content_width;
  for (int x = 0; x < width; ++x)
    gray[x] = math::blend(static_cast<float>(row[offset0[x]]), static_cast<float>(row[offset1[x]]), weight0[x],
                          weight1[x]);
}

RowResampler pick_resampler(ColorOrder color) {
  switch (color) {
    case ColorOrder::bgr: return resample_row_rgb<3, 2, 1, 0>;
    case ColorOrder::rgb: return resample_row_rgb<3, 0, 1, 2>;
    case ColorOrder::bgra: return resample_row_rgb<4, 2, 1, 0>;
    case ColorOrder::rgba: return resample_row_rgb<4, 0, 1, 2>;
    case ColorOrder::gray: return resample_row_gray;
  }
  throw std::invalid_argument("preprocess: unknown color order");
}

// ---- float16 output -------------------------------------------------------

void floats_to_halves_portable(const float* source, int count, std::uint16_t* target) {
  for (int i = 0; i < count; ++i) target[i] = math::float_to_half_bits(source[i]);
}

#if defined(M2F_HAVE_F16C_DISPATCH)
// The hardware conversion rounds to nearest even like float_to_half_bits; chosen at run time so
// the build stays portable to x86-64 CPUs without F16C.
__attribute__((target("avx,f16c"))) void floats_to_halves_f16c(const float* source, int count,
                                                                  std::uint16_t* target) {
  int i = 0;
  for (; i + 8 <= count; i += 8) {
    __m128i halves = _mm256_cvtps_ph(_mm256_loadu_ps(source + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(target + i), halves);
  }
  floats_to_halves_portable(source + i, count - i, target + i);
}

bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

void floats_to_halves(const float* source, int count, std::uint16_t* target) {
#if defined(M2F_HAVE_F16C_DISPATCH)
  if (cpu_has_f16c()) {
    floats_to_halves_f16c(source, count, target);
    return;
  }
#elif defined(__aarch64__)
  for (int i = 0; i < count; ++i) {
    const __fp16 half = static_cast<__fp16>(source[i]);  // one instruction on ARMv8, round to nearest even
    std::memcpy(target + i, &half, sizeof half);
  }
  return;
#endif
  floats_to_halves_portable(source, count, target);
}

// ---- rows -------------------------------------------------------------------

// Vertical blend of two resampled rows + normalisation + right padding, into one float row.
void finish_row(const float* top, const float* bottom, float weight0, float weight1, ChannelAffine affine,
                int content_width, int net_width, float* target) {
  for (int x = 0; x < content_width; ++x)
    target[x] = math::normalize(math::blend(top[x], bottom[x], weight0, weight1), affine);
  const float pad = math::normalize(0.f, affine);
  for (int x = content_width; x < net_width; ++x) target[x] = pad;
}

// Per-thread state: two cached horizontally resampled source rows (a downscale reads each
// source row for one or two output rows, an upscale for several).
class RowWorker {
 public:
  RowWorker(int plane_stride, int max_packed_row_bytes)
      : plane_stride_(plane_stride), staging_(static_cast<std::size_t>(max_packed_row_bytes)) {
    for (auto& slot : slots_) slot.values.resize(static_cast<std::size_t>(3) * plane_stride);
  }

  // Resampled planes of source row y of frame `frame`; keep_y names a row not to evict.
  const float* row(const FramePlan& plan, int frame, int y, int keep_y) {
    for (auto& slot : slots_)
      if (slot.frame == frame && slot.y == y) return slot.values.data();
    Slot* victim = &slots_[0];
    if (slots_[0].frame == frame && slots_[0].y == keep_y) victim = &slots_[1];
    float* values = victim->values.data();
    float* const planes[3] = {values, values + plane_stride_, values + 2 * plane_stride_};
    plan.resample(packed_row(plan, y), plan, planes);
    victim->frame = frame;
    victim->y = y;
    return values;
  }

  int plane_stride() const { return plane_stride_; }

 private:
  struct Slot {
    int frame = -1, y = -1;
    std::vector<float> values;
  };

  // Source row y with its pixels and channels adjacent: in place when the frame is laid out so,
  // else (strided, reversed, Fortran-ordered frames) gathered here one row at a time; the frame
  // itself is never copied.
  const std::uint8_t* packed_row(const FramePlan& plan, int y) {
    const std::uint8_t* row = plan.data + static_cast<std::int64_t>(y) * plan.row_stride;
    if (plan.packed_rows) return row;
    std::uint8_t* packed = staging_.data();
    for (int x = 0; x < plan.width; ++x) {
      const std::uint8_t* pixel = row + static_cast<std::int64_t>(x) * plan.pixel_stride;
      for (int c = 0; c < plan.channels; ++c)
        packed[x * plan.channels + c] = pixel[static_cast<std::int64_t>(c) * plan.channel_stride];
    }
    return packed;
  }

  int plane_stride_;
  Slot slots_[2];
  std::vector<std::uint8_t> staging_;
};

// ---- checks and plans -----------------------------------------------------

void check_out(const TensorView& out, std::size_t batch) {
  if (out.device != Device::cpu) throw std::invalid_argument("preprocess: out must be in host memory");
  if (out.dtype != DType::float32 && out.dtype != DType::float16)
    throw std::invalid_argument("preprocess: out must be float32 or float16");
  if (out.ndim != 4 || out.shape[0] != static_cast<std::int64_t>(batch) || out.shape[1] != 3 || out.shape[2] < 1 ||
      out.shape[3] < 1)
    throw std::invalid_argument("preprocess: out must have shape (" + std::to_string(batch) + ", 3, height, width)");
  if (!out.is_contiguous()) throw std::invalid_argument("preprocess: out must be C-contiguous");
  if (out.data == nullptr) throw std::invalid_argument("preprocess: out has no data");
}

FramePlan make_plan(const TensorView& frame, std::size_t index, const PreprocessOptions& options, int net_height,
                    int net_width) {
  const std::string which = "preprocess: frame " + std::to_string(index);
  if (frame.device != Device::cpu) throw std::invalid_argument(which + " must be in host memory");
  if (frame.dtype != DType::uint8) throw std::invalid_argument(which + " must be uint8");
  const int channels = color_channels(options.color);
  if (frame.ndim != 3 || frame.shape[2] != channels)
    throw std::invalid_argument(which + " must have shape (height, width, " + std::to_string(channels) + ")");
  if (frame.shape[0] < kMinFrameSide || frame.shape[1] < kMinFrameSide)
    throw std::invalid_argument(which + " must be at least " + std::to_string(kMinFrameSide) + "x" +
                                std::to_string(kMinFrameSide));
  if (frame.shape[0] > kMaxSide || frame.shape[1] > kMaxSide)
    throw std::invalid_argument(which + " must be at most " + std::to_string(kMaxSide) + " pixels high and wide");
  if (frame.data == nullptr) throw std::invalid_argument(which + " has no data");

  FramePlan plan;
  plan.data = static_cast<const std::uint8_t*>(frame.data);
  plan.height = static_cast<int>(frame.shape[0]);
  plan.width = static_cast<int>(frame.shape[1]);
  plan.channels = channels;
  plan.row_stride = frame.strides[0];
  plan.pixel_stride = frame.strides[1];
  plan.channel_stride = frame.strides[2];
  plan.packed_rows = plan.pixel_stride == channels && (channels == 1 || plan.channel_stride == 1);
  plan.transform = make_transform(options.resize, plan.height, plan.width, net_height, net_width);
  plan.resample = pick_resampler(options.color);
  plan.planes = options.color == ColorOrder::gray ? 1 : 3;

  const int content_width = plan.transform.content_width;
  plan.x_offset0.resize(static_cast<std::size_t>(content_width));
  plan.x_offset1.resize(static_cast<std::size_t>(content_width));
  plan.x_weight0.resize(static_cast<std::size_t>(content_width));
  plan.x_weight1.resize(static_cast<std::size_t>(content_width));
  for (int x = 0; x < content_width; ++x) {
    const ResizeTap tap = math::linear_tap(x, plan.width, content_width);
    plan.x_offset0[x] = tap.index0 * channels;
    plan.x_offset1[x] = tap.index1 * channels;
    plan.x_weight0[x] = tap.weight0;
    plan.x_weight1[x] = tap.weight1;
    // taps only move right: the columns whose right tap ends 4 bytes inside the row come first
    if (plan.x_offset1[x] + 4 <= plan.width * channels) plan.vector_width = x + 1;
  }
  const int content_height = plan.transform.content_height;
  plan.y_taps.resize(static_cast<std::size_t>(content_height));
  for (int y = 0; y < content_height; ++y) plan.y_taps[y] = math::linear_tap(y, plan.height, content_height);
  return plan;
}

}  // namespace

std::vector<ResizeTransform> preprocess(const std::vector<TensorView>& frames, const TensorView& out,
                                        const PreprocessOptions& options) {
  if (frames.empty()) throw std::invalid_argument("preprocess: no frames");
  check_out(out, frames.size());
  for (int c = 0; c < 3; ++c)
    if (!(options.stddev[c] != 0.f) || options.stddev[c] != options.stddev[c])
      throw std::invalid_argument("preprocess: std must be nonzero");
  if (out.shape[2] > kMaxSide || out.shape[3] > kMaxSide)
    throw std::invalid_argument("preprocess: out must be at most " + std::to_string(kMaxSide) + " high and wide");
  const int net_height = static_cast<int>(out.shape[2]);
  const int net_width = static_cast<int>(out.shape[3]);

  std::vector<FramePlan> plans;
  plans.reserve(frames.size());
  for (std::size_t b = 0; b < frames.size(); ++b) plans.push_back(make_plan(frames[b], b, options, net_height, net_width));

  ChannelAffine affine[3];
  for (int c = 0; c < 3; ++c) affine[c] = math::normalization_affine(options.mean[c], options.stddev[c]);

  // Content rows of all frames, numbered consecutively, so threads share a batch evenly.
  std::vector<std::int64_t> first_row(plans.size() + 1, 0);
  int max_packed_row_bytes = 0;
  for (std::size_t b = 0; b < plans.size(); ++b) {
    first_row[b + 1] = first_row[b] + plans[b].transform.content_height;
    max_packed_row_bytes = std::max(max_packed_row_bytes, plans[b].width * plans[b].channels);
  }
  const std::int64_t plane_size = static_cast<std::int64_t>(net_height) * net_width;
  const bool half_output = out.dtype == DType::float16;
  auto plane_start = [&](std::size_t b, int c, int y) {
    return (static_cast<std::int64_t>(b) * 3 + c) * plane_size + static_cast<std::int64_t>(y) * net_width;
  };

  const std::int64_t min_rows_per_thread = 8;
  parallel_for(first_row.back(), options.threads, min_rows_per_thread, [&](std::int64_t begin, std::int64_t end) {
    RowWorker worker(net_width, max_packed_row_bytes);
    std::vector<float> half_staging(half_output ? static_cast<std::size_t>(net_width) : 0);
    std::size_t b = static_cast<std::size_t>(std::upper_bound(first_row.begin(), first_row.end(), begin) -
                                             first_row.begin() - 1);
    for (std::int64_t row = begin; row < end; ++row) {
      while (row >= first_row[b + 1]) ++b;
      const FramePlan& plan = plans[b];
      const int y = static_cast<int>(row - first_row[b]);
      const ResizeTap& tap = plan.y_taps[y];
      const int frame = static_cast<int>(b);
      const float* top = worker.row(plan, frame, tap.index0, tap.index1);
      const float* bottom = tap.weight1 != 0.f ? worker.row(plan, frame, tap.index1, tap.index0) : top;
      for (int c = 0; c < 3; ++c) {
        const int plane = plan.planes == 1 ? 0 : c;
        const float* top_plane = top + static_cast<std::int64_t>(plane) * worker.plane_stride();
        const float* bottom_plane = bottom + static_cast<std::int64_t>(plane) * worker.plane_stride();
        const std::int64_t start = plane_start(b, c, y);
        if (half_output) {
          finish_row(top_plane, bottom_plane, tap.weight0, tap.weight1, affine[c], plan.transform.content_width,
                     net_width, half_staging.data());
          floats_to_halves(half_staging.data(), net_width, out.ptr<std::uint16_t>() + start);
        } else {
          finish_row(top_plane, bottom_plane, tap.weight0, tap.weight1, affine[c], plan.transform.content_width,
                     net_width, out.ptr<float>() + start);
        }
      }
    }
  });

  // Letterbox bottom padding: pixel value 0, normalised.
  std::vector<std::int64_t> first_pad_row(plans.size() + 1, 0);
  for (std::size_t b = 0; b < plans.size(); ++b)
    first_pad_row[b + 1] = first_pad_row[b] + (net_height - plans[b].transform.content_height);
  parallel_for(first_pad_row.back(), options.threads, 64, [&](std::int64_t begin, std::int64_t end) {
    std::size_t b = static_cast<std::size_t>(
        std::upper_bound(first_pad_row.begin(), first_pad_row.end(), begin) - first_pad_row.begin() - 1);
    for (std::int64_t row = begin; row < end; ++row) {
      while (row >= first_pad_row[b + 1]) ++b;
      const int y = plans[b].transform.content_height + static_cast<int>(row - first_pad_row[b]);
      for (int c = 0; c < 3; ++c) {
        const float pad = math::normalize(0.f, affine[c]);
        const std::int64_t start = plane_start(b, c, y);
        if (half_output)
          std::fill_n(out.ptr<std::uint16_t>() + start, net_width, math::float_to_half_bits(pad));
        else
          std::fill_n(out.ptr<float>() + start, net_width, pad);
      }
    }
  });

  std::vector<ResizeTransform> transforms;
  transforms.reserve(plans.size());
  for (const auto& plan : plans) transforms.push_back(plan.transform);
  return transforms;
}

}  // namespace m2f

// Per-element math of post-processing, shared by the CPU loops and the CUDA kernels.
//
// Two bilinear conventions meet here, and they differ on purpose:
//  - mask logits (low-res) -> network size follows PyTorch's F.interpolate(mode="bilinear",
//    align_corners=False), which is what TAO / detectron2 instance inference uses;
//  - a kept network-size mask -> frame size follows cv2.resize(INTER_LINEAR) on float32, which is
//    what users compare against and what TAO's PyTorch path approximates.
// Both are separable: a horizontal pass per source row, then a vertical blend of two such rows.
#pragma once

#include <cmath>
#include <cstdint>

#include "m2f/hd.hpp"

namespace m2f::math {

// One output coordinate's two source taps along an axis: value = s[i0] * w0 + s[i1] * w1.
// Not resize.hpp's ResizeTap: mask mapping reproduces OpenCV's float path bit for bit, including its
// vertical edge rule (indices clamped, fraction kept), because 0/1 masks are thresholded at exact ties.
struct MaskTap {
  int i0 = 0, i1 = 0;
  float w0 = 1.f, w1 = 0.f;
};

// cv2.resize INTER_LINEAR, horizontal axis: the float position is computed in double and cast, as
// OpenCV does; out-of-range positions clamp both the index and the weight (edge replicated).
M2F_HD MaskTap cv_linear_tap_x(int dst, int src_size, int dst_size) {
  const double scale = 1.0 / (static_cast<double>(dst_size) / src_size);
  float f = static_cast<float>((dst + 0.5) * scale - 0.5);
  int s = static_cast<int>(floorf(f));
  f -= static_cast<float>(s);
  if (s < 0) {
    s = 0;
    f = 0.f;
  }
  if (s >= src_size - 1) {
    s = src_size - 1;
    f = 0.f;
  }
  MaskTap t;
  t.i0 = s;
  t.i1 = s + 1 < src_size ? s + 1 : src_size - 1;
  t.w0 = 1.f - f;
  t.w1 = f;
  return t;
}

// cv2.resize INTER_LINEAR, vertical axis: OpenCV clamps the row indices but keeps the fraction,
// so edge rows blend a row with itself (equal up to rounding, which only matters at exact ties).
M2F_HD MaskTap cv_linear_tap_y(int dst, int src_size, int dst_size) {
  const double scale = 1.0 / (static_cast<double>(dst_size) / src_size);
  float f = static_cast<float>((dst + 0.5) * scale - 0.5);
  int s = static_cast<int>(floorf(f));
  f -= static_cast<float>(s);
  MaskTap t;
  t.i0 = s < 0 ? 0 : (s > src_size - 1 ? src_size - 1 : s);
  t.i1 = s + 1 < 0 ? 0 : (s + 1 > src_size - 1 ? src_size - 1 : s + 1);
  t.w0 = 1.f - f;
  t.w1 = f;
  return t;
}

// The output indices [out_begin, out_end) of a cv2 INTER_LINEAR resize (src_size -> dst_size; the
// vertical taps when vertical) whose taps reach source indices [begin, end): outside them every tap
// reads outside, so a mask that is 0 outside [begin, end) is 0 there too. Taps are monotonic in the
// output index: two binary searches.
M2F_HD void cv_linear_output_range(bool vertical, int src_size, int dst_size, int begin, int end, int& out_begin,
                                   int& out_end) {
  int lo = 0, hi = dst_size;  // first output whose upper tap reaches begin
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    const MaskTap t = vertical ? cv_linear_tap_y(mid, src_size, dst_size) : cv_linear_tap_x(mid, src_size, dst_size);
    if (t.i1 < begin) lo = mid + 1; else hi = mid;
  }
  out_begin = lo;
  hi = dst_size;  // first output at or after out_begin whose lower tap is at or past end
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    const MaskTap t = vertical ? cv_linear_tap_y(mid, src_size, dst_size) : cv_linear_tap_x(mid, src_size, dst_size);
    if (t.i0 < end) lo = mid + 1; else hi = mid;
  }
  out_end = lo;
}

// PyTorch bilinear, align_corners=False, no scale factor given: float arithmetic throughout,
// negative positions clamp to 0, the upper neighbour clamps to the last index.
M2F_HD MaskTap torch_linear_tap(int dst, int src_size, int dst_size) {
  const float scale = static_cast<float>(src_size) / static_cast<float>(dst_size);
  float f = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  if (f < 0.f) f = 0.f;
  const int s = static_cast<int>(f);
  MaskTap t;
  t.i0 = s;
  t.i1 = s + (s < src_size - 1 ? 1 : 0);
  t.w1 = f - static_cast<float>(s);
  t.w0 = 1.f - t.w1;
  return t;
}

// Horizontal pass: one output element from a source row.
M2F_HD float lerp_taps(float a, float b, const MaskTap& t) { return a * t.w0 + b * t.w1; }

// Vertical pass of cv2 (row0 * b0 + row1 * b1) then the 0.5 threshold TAO applies to resized masks.
M2F_HD bool blend_above_half(float row0, float row1, float b0, float b1) { return row0 * b0 + row1 * b1 > 0.5f; }

M2F_HD float blend_rows(float row0, float row1, float b0, float b1) { return row0 * b0 + row1 * b1; }

M2F_HD float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// IEEE binary16 bits -> float, without relying on a half type (host compilers lack one).
M2F_HD float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400u) == 0);
      bits = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float out;
  // memcpy-free type pun that works in device code too
  union {
    std::uint32_t u;
    float f;
  } pun;
  pun.u = bits;
  out = pun.f;
  return out;
}

// Instance score of TAO / detectron2: class probability times the mean sigmoid inside the mask.
M2F_HD float instance_score(float class_prob, double sigmoid_sum, std::int64_t mask_pixels) {
  return class_prob * static_cast<float>(sigmoid_sum / (static_cast<double>(mask_pixels) + 1e-6));
}

}  // namespace m2f::math

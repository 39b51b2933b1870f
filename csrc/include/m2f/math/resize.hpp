// Per-element math of preprocessing, written once for the CPU loop and the CUDA kernels:
// where a bilinear output sample reads its source (OpenCV INTER_LINEAR positions), the
// normalisation, and float -> IEEE half conversion. No std:: calls that device code lacks.
#pragma once

#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <cstring>
#endif

#include "m2f/hd.hpp"

namespace m2f::math {

// The two source samples and their weights behind one output index of a linear resize.
// At the clamped edges index1 == index0 and weight1 == 0.
struct ResizeTap {
  int index0;
  int index1;
  float weight0;
  float weight1;
};

// cv2.resize INTER_LINEAR: half-pixel centres, source position
//   (dst_index + 0.5) * src_size / dst_size - 0.5,
// left/top overshoot clamped to sample 0 and right/bottom to the last sample with weight 1 (no
// antialiasing when shrinking). The position is taken exactly, in integers: OpenCV 5 computes it
// in double, as here to float precision; OpenCV 4.x first rounds it to float, which moves weights
// by up to ~2e-4 on frames a few thousand pixels wide.
M2F_HD ResizeTap linear_tap(int dst_index, int src_size, int dst_size) {
  // position = numerator / denominator
  const long long numerator = (2LL * dst_index + 1) * src_size - dst_size;
  const long long denominator = 2LL * dst_size;
  int index = 0;
  float fraction = 0.f;
  if (numerator > 0) {
    index = static_cast<int>(numerator / denominator);
    // both below 2^24 for any image size, so this float division is correctly rounded
    fraction = static_cast<float>(numerator % denominator) / static_cast<float>(denominator);
  }
  if (index >= src_size - 1) {
    index = src_size - 1;
    fraction = 0.f;
  }
  ResizeTap tap;
  tap.index0 = index;
  tap.index1 = index < src_size - 1 ? index + 1 : index;
  tap.weight0 = 1.f - fraction;
  tap.weight1 = fraction;
  return tap;
}

// One linear blend in the order OpenCV's float path evaluates it.
M2F_HD float blend(float value0, float value1, float weight0, float weight1) {
  return value0 * weight0 + value1 * weight1;
}

// (x / 255 - mean) / std folded into one multiply-add per value.
struct ChannelAffine {
  float scale;
  float offset;
};

M2F_HD ChannelAffine normalization_affine(float mean, float stddev) {
  ChannelAffine affine;
  affine.scale = 1.f / (255.f * stddev);
  affine.offset = -mean / stddev;
  return affine;
}

M2F_HD float normalize(float pixel_0_255, ChannelAffine affine) { return pixel_0_255 * affine.scale + affine.offset; }

M2F_HD std::uint32_t float_bits(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
#endif
}

// IEEE 754 binary16 bits of a float, rounded to nearest even (as numpy's astype(float16) and
// CUDA's __float2half_rn): overflow to infinity, subnormals kept, NaN stays NaN.
M2F_HD std::uint16_t float_to_half_bits(float value) {
  const std::uint32_t bits = float_bits(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // infinity or NaN (keep a quiet NaN payload bit)
    const std::uint32_t nan_bits = magnitude > 0x7f800000u ? (0x200u | ((magnitude >> 13) & 0x3ffu)) : 0u;
    return static_cast<std::uint16_t>(sign | 0x7c00u | nan_bits);
  }
  if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 rounds up to inf
  if (magnitude < 0x38800000u) {                                                     // below 2^-14: subnormal half
    if (magnitude <= 0x33000000u) return static_cast<std::uint16_t>(sign);           // <= 2^-25 rounds to zero
    const std::uint32_t exponent = magnitude >> 23;
    const std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exponent;  // 14..24
    std::uint32_t result = mantissa >> shift;
    const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1u);
    if (remainder > halfway || (remainder == halfway && (result & 1u))) ++result;
    return static_cast<std::uint16_t>(sign | result);
  }
  std::uint32_t result = ((magnitude >> 23) - 112u) << 10 | ((magnitude >> 13) & 0x3ffu);
  const std::uint32_t remainder = magnitude & 0x1fffu;
  if (remainder > 0x1000u || (remainder == 0x1000u && (result & 1u))) ++result;  // a carry may reach the exponent
  return static_cast<std::uint16_t>(sign | result);
}

}  // namespace m2f::math

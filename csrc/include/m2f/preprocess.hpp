// Fused CPU preprocessing: uint8 camera frames -> normalised planar RGB network input, one pass.
#pragma once

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "m2f/tensor_view.hpp"
#include "m2f/transform.hpp"

namespace m2f {

// Channel layout of the frames.
enum class ColorOrder : int { bgr = 0, rgb = 1, bgra = 2, rgba = 3, gray = 4 };

inline ColorOrder parse_color_order(const std::string& name) {
  if (name == "bgr") return ColorOrder::bgr;
  if (name == "rgb") return ColorOrder::rgb;
  if (name == "bgra") return ColorOrder::bgra;
  if (name == "rgba") return ColorOrder::rgba;
  if (name == "gray") return ColorOrder::gray;
  throw std::invalid_argument("color must be one of 'bgr', 'rgb', 'bgra', 'rgba', 'gray', got '" + name + "'");
}

inline const char* color_order_name(ColorOrder color) {
  switch (color) {
    case ColorOrder::bgr: return "bgr";
    case ColorOrder::rgb: return "rgb";
    case ColorOrder::bgra: return "bgra";
    case ColorOrder::rgba: return "rgba";
    case ColorOrder::gray: return "gray";
  }
  return "unknown";
}

// Channels a frame of this layout has (the last axis).
inline int color_channels(ColorOrder color) {
  switch (color) {
    case ColorOrder::bgr:
    case ColorOrder::rgb: return 3;
    case ColorOrder::bgra:
    case ColorOrder::rgba: return 4;
    case ColorOrder::gray: return 1;
  }
  return 0;
}

// Smallest frame height and width accepted: below it a network input is mostly interpolation.
constexpr int kMinFrameSide = 32;
// Largest frame or network side: keeps the exact sampling-position arithmetic in range.
constexpr int kMaxSide = 1 << 20;

struct PreprocessOptions {
  ColorOrder color = ColorOrder::bgr;
  ResizeMode resize = ResizeMode::stretch;
  std::array<float, 3> mean{{0.485f, 0.456f, 0.406f}};    // RGB order, in [0, 1] units
  std::array<float, 3> stddev{{0.229f, 0.224f, 0.225f}};  // RGB order, nonzero
  int threads = 0;                                        // 0 = one per core
};

// Resizes each frame into out[b] (bilinear, cv2.resize INTER_LINEAR positions, no antialias),
// reorders channels to RGB (gray is replicated), and writes (x / 255 - mean) / std.
// frames[b]: uint8 (H, W, C) with C == color_channels(options.color), any byte strides (read in
// place). out: float32 or float16 (B, 3, net_h, net_w), C-contiguous, B == frames.size().
// letterbox keeps the aspect ratio and pads bottom/right with pixel value 0 before normalising.
// Throws std::invalid_argument on a view that breaks these rules. Returns one transform per frame.
std::vector<ResizeTransform> preprocess(const std::vector<TensorView>& frames, const TensorView& out,
                                        const PreprocessOptions& options);

}  // namespace m2f

// How a frame was placed into the network input, so post-processing can undo it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace m2f {

enum class ResizeMode : int { stretch = 0, letterbox = 1 };

inline ResizeMode parse_resize_mode(const std::string& name) {
  if (name == "stretch") return ResizeMode::stretch;
  if (name == "letterbox") return ResizeMode::letterbox;
  throw std::invalid_argument("resize mode must be 'stretch' or 'letterbox', got '" + name + "'");
}

inline const char* resize_mode_name(ResizeMode mode) {
  return mode == ResizeMode::stretch ? "stretch" : "letterbox";
}

// The frame occupies rows [0, content_height) and columns [0, content_width) of the network
// input. stretch: the whole input (aspect ratio not kept). letterbox: the frame scaled by
// min(net/frame) with the rest padded at the bottom and right (TAO's PyTorch inference).
struct ResizeTransform {
  ResizeMode mode = ResizeMode::stretch;
  int frame_height = 0, frame_width = 0;
  int net_height = 0, net_width = 0;
  int content_height = 0, content_width = 0;
};

inline ResizeTransform make_transform(ResizeMode mode, int frame_height, int frame_width, int net_height,
                                      int net_width) {
  if (frame_height <= 0 || frame_width <= 0 || net_height <= 0 || net_width <= 0)
    throw std::invalid_argument("make_transform: sizes must be positive");
  ResizeTransform t;
  t.mode = mode;
  t.frame_height = frame_height;
  t.frame_width = frame_width;
  t.net_height = net_height;
  t.net_width = net_width;
  if (mode == ResizeMode::stretch) {
    t.content_height = net_height;
    t.content_width = net_width;
  } else {
    double scale = std::min(static_cast<double>(net_height) / frame_height,
                            static_cast<double>(net_width) / frame_width);
    // round half up, as detectron2's int(x + 0.5)
    t.content_height = std::clamp(static_cast<int>(std::floor(frame_height * scale + 0.5)), 1, net_height);
    t.content_width = std::clamp(static_cast<int>(std::floor(frame_width * scale + 0.5)), 1, net_width);
  }
  return t;
}

}  // namespace m2f

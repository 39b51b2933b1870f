// Overlay of an instance map onto a frame, in place.
#pragma once

#include "m2f/tensor_view.hpp"

namespace m2f {

// frame: (H, W, 3) uint8, any strides, written in place. instance_map: (H, W) int32, 0 = background,
// i + 1 = instance i. colors: (N, 3) uint8 in the frame's channel order. Each instance pixel becomes
// blend(frame, colors[i], alpha); with outline, the instance's outline pixels get colors[i] itself.
// Throws std::invalid_argument (frame untouched) when a map value is outside [0, N].
void draw_instances(const TensorView& frame, const TensorView& instance_map, const TensorView& colors, float alpha,
                    bool outline, int threads);

}  // namespace m2f

// Per-pixel overlay math shared by the CPU drawing loop and any CUDA twin.
// The alpha is quantised to 1/255 steps so the blend is exact integer arithmetic: the same bytes on
// every platform and in the numpy reference the tests use.
#pragma once

#include <cstdint>

#include "m2f/hd.hpp"

namespace m2f::math {

// alpha in [0, 1] (clamped; NaN counts as 0) -> weight in [0, 255].
M2F_HD int blend_weight(float alpha) {
  if (!(alpha > 0.0f)) return 0;
  if (alpha >= 1.0f) return 255;
  return static_cast<int>(alpha * 255.0f + 0.5f);
}

// round((base * (255 - w) + paint * w) / 255), w in [0, 255].
M2F_HD std::uint8_t blend_channel(std::uint8_t base, std::uint8_t paint, int weight) {
  const int mixed = static_cast<int>(base) * (255 - weight) + static_cast<int>(paint) * weight;
  return static_cast<std::uint8_t>((mixed + 127) / 255);
}

// A pixel of an instance lies on its outline when one of its 4 neighbours inside the image belongs
// to something else (another instance or the background). Neighbours outside the image are ignored,
// so an instance touching the border is not outlined along the border.
M2F_HD bool on_outline(std::int32_t id, std::int32_t up, std::int32_t down, std::int32_t left, std::int32_t right,
                       bool has_up, bool has_down, bool has_left, bool has_right) {
  if (id == 0) return false;
  return (has_up && up != id) || (has_down && down != id) || (has_left && left != id) ||
         (has_right && right != id);
}

}  // namespace m2f::math

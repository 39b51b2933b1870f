#include "m2f/draw.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "m2f/math/blend.hpp"
#include "m2f/parallel.hpp"

namespace m2f {
namespace {

constexpr std::int64_t kRowsPerChunk = 16;

struct MapRows {
  const char* base;
  std::int64_t row_stride, col_stride;
  std::int32_t at(std::int64_t r, std::int64_t c) const {
    return *reinterpret_cast<const std::int32_t*>(base + r * row_stride + c * col_stride);
  }
};

// Finds a map value outside [0, count] before anything is written, so a bad map leaves the frame intact.
void check_ids(const MapRows& map, std::int64_t height, std::int64_t width, std::int32_t count, int threads) {
  std::atomic<std::int64_t> bad_index{-1};
  parallel_for(height, threads, kRowsPerChunk * 4, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (std::int64_t c = 0; c < width; ++c) {
        const std::int32_t id = map.at(r, c);
        if (id < 0 || id > count) {
          std::int64_t expected = -1;
          bad_index.compare_exchange_strong(expected, r * width + c);
          return;
        }
      }
    }
  });
  const std::int64_t bad = bad_index.load();
  if (bad >= 0) {
    const std::int64_t r = bad / width, c = bad % width;
    throw std::invalid_argument("instance_map value " + std::to_string(map.at(r, c)) + " at row " + std::to_string(r) +
                                ", column " + std::to_string(c) + " is outside 0.." + std::to_string(count) +
                                " (0 = background, i + 1 = colors[i])");
  }
}

}  // namespace

void draw_instances(const TensorView& frame, const TensorView& instance_map, const TensorView& colors, float alpha,
                    bool outline, int threads) {
  if (frame.ndim != 3 || frame.shape[2] != 3 || instance_map.ndim != 2 || colors.ndim != 2 || colors.shape[1] != 3 ||
      frame.shape[0] != instance_map.shape[0] || frame.shape[1] != instance_map.shape[1])
    throw std::invalid_argument("draw_instances: frame (H, W, 3), instance_map (H, W) and colors (N, 3) expected");
  const std::int64_t height = frame.shape[0], width = frame.shape[1];
  const std::int64_t count = colors.shape[0];
  if (count > INT32_MAX - 1) throw std::invalid_argument("draw_instances: too many colors");

  std::vector<std::uint8_t> palette(static_cast<std::size_t>(count * 3));
  for (std::int64_t i = 0; i < count; ++i)
    for (int ch = 0; ch < 3; ++ch)
      palette[static_cast<std::size_t>(i * 3 + ch)] =
          *colors.at_bytes<const std::uint8_t>(i * colors.strides[0] + ch * colors.strides[1]);

  const MapRows map{static_cast<const char*>(instance_map.data), instance_map.strides[0], instance_map.strides[1]};
  check_ids(map, height, width, static_cast<std::int32_t>(count), threads);

  const int weight = math::blend_weight(alpha);
  char* const frame_base = static_cast<char*>(frame.data);
  const std::int64_t fs0 = frame.strides[0], fs1 = frame.strides[1], fs2 = frame.strides[2];

  const std::int64_t ms0 = instance_map.strides[0], ms1 = instance_map.strides[1];
  const char* const map_base = static_cast<const char*>(instance_map.data);

  // Packed BGR pixels and a packed map row (the usual case) get typed pointers the compiler can keep in
  // registers; any other strides take the general byte-offset path. Both call the same math.
  const bool packed = fs1 == 3 && fs2 == 1 && ms1 == static_cast<std::int64_t>(sizeof(std::int32_t));

  parallel_for(height, threads, kRowsPerChunk, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const bool has_up = r > 0, has_down = r + 1 < height;
      // Row pointers: the neighbours of row r are one map stride away.
      const char* row = map_base + r * ms0;
      const char* row_up = has_up ? row - ms0 : row;
      const char* row_down = has_down ? row + ms0 : row;
      char* frame_row = frame_base + r * fs0;
      if (packed) {
        const auto* ids = reinterpret_cast<const std::int32_t*>(row);
        const auto* ids_up = reinterpret_cast<const std::int32_t*>(row_up);
        const auto* ids_down = reinterpret_cast<const std::int32_t*>(row_down);
        auto* pixels = reinterpret_cast<std::uint8_t*>(frame_row);
        for (std::int64_t c = 0; c < width; ++c) {
          const std::int32_t id = ids[c];
          if (id == 0) continue;
          const std::uint8_t* paint = &palette[static_cast<std::size_t>(id - 1) * 3];
          int w = weight;
          if (outline) {
            const bool has_left = c > 0, has_right = c + 1 < width;
            const std::int32_t left = has_left ? ids[c - 1] : id;
            const std::int32_t right = has_right ? ids[c + 1] : id;
            if (math::on_outline(id, ids_up[c], ids_down[c], left, right, has_up, has_down, has_left, has_right))
              w = 255;
          }
          std::uint8_t* px = pixels + 3 * c;
          px[0] = math::blend_channel(px[0], paint[0], w);
          px[1] = math::blend_channel(px[1], paint[1], w);
          px[2] = math::blend_channel(px[2], paint[2], w);
        }
        continue;
      }
      auto id_at = [ms1](const char* base, std::int64_t c) {
        return *reinterpret_cast<const std::int32_t*>(base + c * ms1);
      };
      for (std::int64_t c = 0; c < width; ++c) {
        const std::int32_t id = id_at(row, c);
        if (id == 0) continue;
        const std::uint8_t* paint = &palette[static_cast<std::size_t>(id - 1) * 3];
        int w = weight;
        if (outline) {
          const bool has_left = c > 0, has_right = c + 1 < width;
          const std::int32_t up = id_at(row_up, c);
          const std::int32_t down = id_at(row_down, c);
          const std::int32_t left = has_left ? id_at(row, c - 1) : id;
          const std::int32_t right = has_right ? id_at(row, c + 1) : id;
          if (math::on_outline(id, up, down, left, right, has_up, has_down, has_left, has_right)) w = 255;
        }
        char* pixel = frame_row + c * fs1;
        for (int ch = 0; ch < 3; ++ch) {
          auto* value = reinterpret_cast<std::uint8_t*>(pixel + ch * fs2);
          *value = math::blend_channel(*value, paint[ch], w);
        }
      }
    }
  });
}

}  // namespace m2f

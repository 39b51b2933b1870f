// Cropped masks (FrameInstances' form): their checks, and full masks built from them on demand.
#include <cstring>
#include <stdexcept>
#include <string>

#include "m2f/parallel.hpp"
#include "m2f/postprocess.hpp"

namespace m2f {

void check_crops(const CropSet& c, std::int64_t bytes) {
  if (c.count < 0 || c.height < 0 || c.width < 0) throw std::invalid_argument("crops: negative sizes");
  if (c.count == 0) return;
  if (c.offsets[0] < 0) throw std::invalid_argument("crop_offsets: must start at >= 0");
  for (std::int64_t i = 0; i < c.count; ++i) {
    const CropWindow& w = c.windows[i];
    if (w.x0 < 0 || w.y0 < 0 || w.x1 > c.width || w.y1 > c.height || w.x0 > w.x1 || w.y0 > w.y1)
      throw std::invalid_argument("boxes: window " + std::to_string(i) + " lies outside the " +
                                  std::to_string(c.height) + "x" + std::to_string(c.width) + " frame");
    const std::int64_t area = static_cast<std::int64_t>(w.width()) * w.height();
    if (c.offsets[i + 1] - c.offsets[i] != area)
      throw std::invalid_argument("crop_offsets: crop " + std::to_string(i) + " holds " +
                                  std::to_string(c.offsets[i + 1] - c.offsets[i]) + " bytes, its window " +
                                  std::to_string(area));
  }
  if (c.offsets[c.count] > bytes)
    throw std::invalid_argument("crops: the offsets reach byte " + std::to_string(c.offsets[c.count]) + " of " +
                                std::to_string(bytes));
}

void expand_crops(const CropSet& c, const TensorView& out, int threads) {
  if (out.ndim != 3 || out.dtype != DType::uint8 || out.shape[0] != c.count || out.shape[1] != c.height ||
      out.shape[2] != c.width || (out.numel() > 0 && !out.is_contiguous()))
    throw std::invalid_argument("expand_crops: out must be (N, H, W) uint8 C-contiguous");
  const std::int64_t plane = static_cast<std::int64_t>(c.height) * c.width;
  parallel_for(c.count, threads, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      std::uint8_t* o = out.ptr<std::uint8_t>() + i * plane;
      std::memset(o, 0, static_cast<std::size_t>(plane));
      const CropWindow& w = c.windows[i];
      const std::uint8_t* crop = c.crops + c.offsets[i];
      for (int y = w.y0; y < w.y1; ++y)
        std::memcpy(o + static_cast<std::int64_t>(y) * c.width + w.x0,
                    crop + static_cast<std::int64_t>(y - w.y0) * w.width(), static_cast<std::size_t>(w.width()));
    }
  });
}

void instance_map(const CropSet& c, const TensorView& out, int threads) {
  if (out.ndim != 2 || out.dtype != DType::int32 || !out.is_contiguous() || out.shape[0] != c.height ||
      out.shape[1] != c.width)
    throw std::invalid_argument("instance_map: out must be (H, W) int32 C-contiguous");
  // Rows in parallel; within a row, painting from the last instance to the first leaves the
  // lowest index on top, and only the crops covering the row are read.
  parallel_for(c.height, threads, 16, [&](std::int64_t y0, std::int64_t y1) {
    std::memset(out.ptr<std::int32_t>() + y0 * c.width, 0, sizeof(std::int32_t) * static_cast<std::size_t>((y1 - y0) * c.width));
    for (std::int64_t i = c.count - 1; i >= 0; --i) {
      const CropWindow& w = c.windows[i];
      const std::int32_t label = static_cast<std::int32_t>(i + 1);
      const std::int64_t from = std::max<std::int64_t>(y0, w.y0), to = std::min<std::int64_t>(y1, w.y1);
      for (std::int64_t y = from; y < to; ++y) {
        const std::uint8_t* m = c.crops + c.offsets[i] + (y - w.y0) * w.width();
        std::int32_t* o = out.ptr<std::int32_t>() + y * c.width + w.x0;
        for (int x = 0; x < w.width(); ++x) o[x] = m[x] ? label : o[x];
      }
    }
  });
}

}  // namespace m2f

// One label image from N instance masks: 0 = background, i + 1 = instance i, lower index wins.
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "m2f/parallel.hpp"
#include "m2f/postprocess.hpp"

namespace m2f {

void instance_map(const TensorView& masks, const TensorView& out, int threads) {
  if (masks.ndim != 3 || out.ndim != 2) throw std::invalid_argument("instance_map: masks (N,H,W), out (H,W)");
  if (masks.dtype != DType::uint8 && masks.dtype != DType::boolean)
    throw std::invalid_argument("instance_map: masks must be uint8 or bool");
  if (out.dtype != DType::int32 || !out.is_contiguous())
    throw std::invalid_argument("instance_map: out must be C-contiguous int32");
  const std::int64_t n = masks.shape[0], H = masks.shape[1], W = masks.shape[2];
  if (out.shape[0] != H || out.shape[1] != W) throw std::invalid_argument("instance_map: out size differs from masks");
  const std::int64_t ms = masks.strides[0], rs = masks.strides[1], cs = masks.strides[2];
  // Painting from the last instance to the first leaves the lowest index on top. Masks are mostly
  // zero: dense rows are skipped 32 bytes at a time and only set bytes are painted.
  parallel_for(H, threads, 16, [&](std::int64_t y0, std::int64_t y1) {
    for (std::int64_t y = y0; y < y1; ++y) {
      std::int32_t* o = out.ptr<std::int32_t>() + y * W;
      std::memset(o, 0, sizeof(std::int32_t) * static_cast<std::size_t>(W));
      for (std::int64_t i = n - 1; i >= 0; --i) {
        const std::uint8_t* m = static_cast<const std::uint8_t*>(masks.data) + i * ms + y * rs;
        const std::int32_t label = static_cast<std::int32_t>(i + 1);
        if (cs == 1) {
          std::int64_t x = 0;
          while (x < W) {
            if (x + 32 <= W) {
              std::uint64_t w[4];
              std::memcpy(w, m + x, 32);
              if ((w[0] | w[1] | w[2] | w[3]) == 0) {
                x += 32;
                continue;
              }
            }
            const std::int64_t end = std::min<std::int64_t>(W, x + 32);
            for (; x < end; ++x) o[x] = m[x] ? label : o[x];
          }
        } else {
          for (std::int64_t x = 0; x < W; ++x) o[x] = m[x * cs] ? label : o[x];
        }
      }
    }
  });
}

}  // namespace m2f

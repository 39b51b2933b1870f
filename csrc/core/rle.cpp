// COCO run-length encoding, byte-identical to pycocotools' rleEncode + rleToString.
//
// COCO runs over the mask in column-major order and starts a new run wherever the byte value
// changes (starting from 0). Walking columns of a row-major mask would stride through memory, so
// the changes are found row by row instead: within a column, a change at row y > 0 is a row-to-row
// difference; at row 0 the previous element is the bottom of the previous column. Changes are then
// bucketed by column (counting sort keeps row order) and turned into run lengths.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "m2f/parallel.hpp"
#include "m2f/postprocess.hpp"

namespace m2f {
namespace {

struct Change {
  int x, y;
};

// pycocotools' compressed string: LEB128-like 5-bit groups offset by 48, deltas from counts[i-2].
std::string counts_to_string(const std::vector<std::int64_t>& counts) {
  std::string s;
  s.reserve(counts.size() * 2);
  for (std::size_t i = 0; i < counts.size(); ++i) {
    std::int64_t x = counts[i];
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      std::int64_t c = x & 0x1f;
      x >>= 5;  // arithmetic shift, as the C original on signed long
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back(static_cast<char>(c + 48));
    }
  }
  return s;
}

// Run lengths from the flat column-major positions where the value changes (starting from 0).
std::string positions_to_string(const std::vector<std::int64_t>& positions, std::int64_t total) {
  std::vector<std::int64_t> counts;
  counts.reserve(positions.size() + 1);
  std::int64_t last = 0;
  for (std::int64_t p : positions) {
    counts.push_back(p - last);
    last = p;
  }
  counts.push_back(total - last);
  return counts_to_string(counts);
}

std::string encode_one(const char* base, std::int64_t row_stride, std::int64_t col_stride, int H, int W,
                       std::vector<Change>& changes, std::vector<int>& per_column) {
  changes.clear();
  auto at = [&](int y, int x) {
    return *reinterpret_cast<const std::uint8_t*>(base + static_cast<std::int64_t>(y) * row_stride +
                                                  static_cast<std::int64_t>(x) * col_stride);
  };
  // column starts: compare with the bottom of the previous column (0 before the first)
  for (int x = 0; x < W; ++x) {
    const std::uint8_t previous = x == 0 ? 0 : at(H - 1, x - 1);
    if (at(0, x) != previous) changes.push_back({x, 0});
  }
  for (int y = 1; y < H; ++y) {
    const char* above = base + static_cast<std::int64_t>(y - 1) * row_stride;
    const char* here = base + static_cast<std::int64_t>(y) * row_stride;
    int x = 0;
    if (col_stride == 1) {
      for (; x + 32 <= W; x += 32) {
        std::uint64_t a[4], b[4];
        std::memcpy(a, above + x, 32);
        std::memcpy(b, here + x, 32);
        if (((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0) continue;
        for (int j = x; j < x + 32; ++j)
          if (above[j] != here[j]) changes.push_back({j, y});
      }
    }
    for (; x < W; ++x)
      if (at(y - 1, x) != at(y, x)) changes.push_back({x, y});
  }
  // bucket by column, keeping the row order of each column
  per_column.assign(static_cast<std::size_t>(W) + 1, 0);
  for (const Change& c : changes) ++per_column[static_cast<std::size_t>(c.x) + 1];
  for (int x = 0; x < W; ++x) per_column[static_cast<std::size_t>(x) + 1] += per_column[static_cast<std::size_t>(x)];
  std::vector<std::int64_t> positions(changes.size());
  for (const Change& c : changes)
    positions[static_cast<std::size_t>(per_column[static_cast<std::size_t>(c.x)]++)] =
        static_cast<std::int64_t>(c.x) * H + c.y;
  return positions_to_string(positions, static_cast<std::int64_t>(H) * W);
}

// One cropped mask: outside its window the frame is 0, so each window column contributes at most
// a change where the zeros above the crop end, the changes inside the crop, and one where the
// zeros below it begin; columns outside the window contribute none.
std::string encode_crop(const std::uint8_t* crop, const CropWindow& w, int H, int W, std::vector<std::int64_t>& positions) {
  positions.clear();
  std::uint8_t previous = 0;
  for (int x = w.x0; x < w.x1; ++x) {
    const std::int64_t column = static_cast<std::int64_t>(x) * H;
    if (w.y0 > 0 && previous) {
      positions.push_back(column);
      previous = 0;
    }
    for (int y = w.y0; y < w.y1; ++y) {
      const std::uint8_t v = crop[static_cast<std::int64_t>(y - w.y0) * w.width() + (x - w.x0)] ? 1 : 0;
      if (v != previous) {
        positions.push_back(column + y);
        previous = v;
      }
    }
    if (w.y1 < H && previous) {
      positions.push_back(column + w.y1);
      previous = 0;
    }
  }
  if (previous && w.x1 < W) positions.push_back(static_cast<std::int64_t>(w.x1) * H);
  return positions_to_string(positions, static_cast<std::int64_t>(H) * W);
}

}  // namespace

std::vector<std::string> rle_encode(const CropSet& crops, int threads) {
  std::vector<std::string> out(static_cast<std::size_t>(crops.count));
  parallel_for(crops.count, threads, 4, [&](std::int64_t begin, std::int64_t end) {
    std::vector<std::int64_t> positions;
    for (std::int64_t i = begin; i < end; ++i)
      out[static_cast<std::size_t>(i)] =
          encode_crop(crops.crops + crops.offsets[i], crops.windows[i], crops.height, crops.width, positions);
  });
  return out;
}

std::vector<std::string> rle_encode(const TensorView& masks, int threads) {
  if (masks.ndim != 3) throw std::invalid_argument("rle_encode: masks (N,H,W) expected");
  if (masks.dtype != DType::uint8 && masks.dtype != DType::boolean)
    throw std::invalid_argument("rle_encode: masks must be uint8 or bool");
  const std::int64_t n = masks.shape[0];
  const int H = static_cast<int>(masks.shape[1]), W = static_cast<int>(masks.shape[2]);
  std::vector<std::string> out(static_cast<std::size_t>(n));
  parallel_for(n, threads, 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<Change> changes;
    std::vector<int> per_column;
    for (std::int64_t i = begin; i < end; ++i) {
      if (H == 0 || W == 0) {
        out[static_cast<std::size_t>(i)] = counts_to_string({0});
        continue;
      }
      const char* base = static_cast<const char*>(masks.data) + i * masks.strides[0];
      out[static_cast<std::size_t>(i)] = encode_one(base, masks.strides[1], masks.strides[2], H, W, changes, per_column);
    }
  });
  return out;
}

}  // namespace m2f

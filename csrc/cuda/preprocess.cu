// GPU twin of csrc/core preprocess: same per-element math (m2f/math/resize.hpp), one thread per
// network pixel writing its three planes.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "m2f/cuda/check.hpp"
#include "m2f/cuda/launch.hpp"
#include "m2f/cuda/ops.hpp"
#include "m2f/math/resize.hpp"

namespace m2f::cuda {
namespace {

struct FrameGeometry {
  const unsigned char* data;
  long long row_stride, col_stride, channel_stride;  // bytes
  int height, width;
  int source_channel[3];  // frame channel feeding R, G, B
};

struct NetGeometry {
  int net_height, net_width;
  int content_height, content_width;
  math::ChannelAffine affine[3];
};

template <typename Out>
__device__ __forceinline__ void store(Out* plane, long long index, float value);
template <>
__device__ __forceinline__ void store<float>(float* plane, long long index, float value) {
  plane[index] = value;
}
template <>
__device__ __forceinline__ void store<unsigned short>(unsigned short* plane, long long index, float value) {
  plane[index] = math::float_to_half_bits(value);
}

// Rows are grid-strided: gridDim.y is capped at 65535, network inputs may be taller than 65535 * 8.
template <typename Out>
__global__ void preprocess_kernel(FrameGeometry frame, NetGeometry net, Out* out) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  if (x >= net.net_width) return;
  const long long plane = static_cast<long long>(net.net_height) * net.net_width;
  for (int y = blockIdx.y * blockDim.y + threadIdx.y; y < net.net_height; y += gridDim.y * blockDim.y) {
    const long long index = static_cast<long long>(y) * net.net_width + x;
    if (x >= net.content_width || y >= net.content_height) {
      // letterbox padding: pixel value 0, normalised like any other pixel
      for (int c = 0; c < 3; ++c) store(out + c * plane, index, math::normalize(0.f, net.affine[c]));
      continue;
    }
    const math::ResizeTap tx = math::linear_tap(x, frame.width, net.content_width);
    const math::ResizeTap ty = math::linear_tap(y, frame.height, net.content_height);
    const unsigned char* row0 = frame.data + ty.index0 * frame.row_stride;
    const unsigned char* row1 = frame.data + ty.index1 * frame.row_stride;
    const long long col0 = tx.index0 * frame.col_stride, col1 = tx.index1 * frame.col_stride;
    for (int c = 0; c < 3; ++c) {
      const long long ch = frame.source_channel[c] * frame.channel_stride;
      const float top = math::blend(static_cast<float>(row0[col0 + ch]), static_cast<float>(row0[col1 + ch]),
                                    tx.weight0, tx.weight1);
      const float bottom = math::blend(static_cast<float>(row1[col0 + ch]), static_cast<float>(row1[col1 + ch]),
                                       tx.weight0, tx.weight1);
      const float value = math::blend(top, bottom, ty.weight0, ty.weight1);
      store(out + c * plane, index, math::normalize(value, net.affine[c]));
    }
  }
}

void source_channels(ColorOrder color, int out[3]) {
  switch (color) {
    case ColorOrder::bgr:
    case ColorOrder::bgra: out[0] = 2; out[1] = 1; out[2] = 0; return;
    case ColorOrder::rgb:
    case ColorOrder::rgba: out[0] = 0; out[1] = 1; out[2] = 2; return;
    case ColorOrder::gray: out[0] = 0; out[1] = 0; out[2] = 0; return;
  }
}

std::string dims(const TensorView& v) {
  std::string s = "(";
  for (int i = 0; i < v.ndim; ++i) s += (i ? ", " : "") + std::to_string(v.shape[i]);
  return s + ")";
}

}  // namespace

std::vector<ResizeTransform> preprocess(const std::vector<TensorView>& frames, const TensorView& out,
                                        const PreprocessOptions& options, cudaStream_t stream) {
  // --- types
  if (out.dtype != DType::float32 && out.dtype != DType::float16)
    throw std::invalid_argument("out: expected float32 or float16, got " + std::string(dtype_name(out.dtype)));
  // --- sizes
  if (frames.empty()) throw std::invalid_argument("frames: expected at least one frame");
  if (out.ndim != 4 || out.shape[1] != 3 || !out.is_contiguous())
    throw std::invalid_argument("out: expected a C-contiguous (B, 3, H, W) tensor, got " + dims(out));
  if (out.shape[2] < 1 || out.shape[3] < 1 || out.shape[2] > kMaxSide || out.shape[3] > kMaxSide)
    throw std::invalid_argument("out: height and width must be in [1, " + std::to_string(kMaxSide) + "], got " +
                                dims(out));
  if (out.shape[0] != static_cast<std::int64_t>(frames.size()))
    throw std::invalid_argument("out: batch " + std::to_string(out.shape[0]) + " does not match " +
                                std::to_string(frames.size()) + " frames");
  // --- device
  if (out.device != Device::cuda || out.data == nullptr) throw std::invalid_argument("out: expected GPU memory");
  for (int c = 0; c < 3; ++c)
    if (!(options.stddev[c] != 0.f) || !std::isfinite(options.stddev[c]) || !std::isfinite(options.mean[c]))
      throw std::invalid_argument("std: values must be finite and nonzero, and mean finite");

  const int net_h = static_cast<int>(out.shape[2]), net_w = static_cast<int>(out.shape[3]);
  const int channels = color_channels(options.color);
  std::vector<ResizeTransform> transforms;
  for (std::size_t b = 0; b < frames.size(); ++b) {
    const TensorView& f = frames[b];
    const std::string arg = "frames[" + std::to_string(b) + "]";
    if (f.dtype != DType::uint8) throw std::invalid_argument(arg + ": expected uint8, got " + dtype_name(f.dtype));
    if (f.ndim != 3 || f.shape[2] != channels)
      throw std::invalid_argument(arg + ": expected (H, W, " + std::to_string(channels) + ") for color '" +
                                  color_order_name(options.color) + "', got " + dims(f));
    if (f.shape[0] < kMinFrameSide || f.shape[1] < kMinFrameSide)
      throw std::invalid_argument(arg + ": frames must be at least " + std::to_string(kMinFrameSide) + "x" +
                                  std::to_string(kMinFrameSide) + ", got " + dims(f));
    if (f.shape[0] > kMaxSide || f.shape[1] > kMaxSide)
      throw std::invalid_argument(arg + ": frames must be at most " + std::to_string(kMaxSide) + " pixels high and wide, got " +
                                  dims(f));
    if (f.device != Device::cuda || f.data == nullptr) throw std::invalid_argument(arg + ": expected GPU memory");
    transforms.push_back(make_transform(options.resize, static_cast<int>(f.shape[0]), static_cast<int>(f.shape[1]),
                                        net_h, net_w));
  }

  const std::int64_t sample_bytes = static_cast<std::int64_t>(3) * net_h * net_w * dtype_size(out.dtype);
  for (std::size_t b = 0; b < frames.size(); ++b) {
    const TensorView& f = frames[b];
    const ResizeTransform& t = transforms[b];
    FrameGeometry frame{};
    frame.data = static_cast<const unsigned char*>(f.data);
    frame.row_stride = f.strides[0];
    frame.col_stride = f.strides[1];
    frame.channel_stride = f.strides[2];
    frame.height = t.frame_height;
    frame.width = t.frame_width;
    source_channels(options.color, frame.source_channel);
    NetGeometry net{};
    net.net_height = net_h;
    net.net_width = net_w;
    net.content_height = t.content_height;
    net.content_width = t.content_width;
    for (int c = 0; c < 3; ++c) net.affine[c] = math::normalization_affine(options.mean[c], options.stddev[c]);

    const dim3 block(32, 8);
    const dim3 grid((net_w + block.x - 1) / block.x, std::min((net_h + 7) / 8, 65535));
    char* sample = static_cast<char*>(out.data) + static_cast<std::int64_t>(b) * sample_bytes;
    if (out.dtype == DType::float32)
      M2F_LAUNCH(preprocess_kernel<float>, grid, block, stream)(frame, net, reinterpret_cast<float*>(sample));
    else
      M2F_LAUNCH(preprocess_kernel<unsigned short>, grid, block, stream)(frame, net,
                                                                         reinterpret_cast<unsigned short*>(sample));
    M2F_CUDA_CHECK(cudaGetLastError());
  }
  return transforms;
}

}  // namespace m2f::cuda

// GPU twin of csrc/core post-processing: the same per-element math (m2f/math/mask.hpp). Only the
// kept instances' masks are ever resized, and only inside their frame windows (crops, as on the
// CPU); the full-size float masks and the raw head's upsampled logits never leave the device, and
// the raw head never stores a mask for a dropped query.
#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>

#include "m2f/cuda/check.hpp"
#include "m2f/cuda/launch.hpp"
#include "m2f/cuda/ops.hpp"
#include "m2f/math/mask.hpp"

namespace m2f::cuda {
namespace {

constexpr int kThreads = 256;

// Reads element i of a 1-D strided view as float / int64, whatever its dtype.
struct Vector1D {
  const char* data;
  long long stride;
  DType dtype;
  __device__ float as_float(long long i) const {
    const char* p = data + i * stride;
    switch (dtype) {
      case DType::float32: return *reinterpret_cast<const float*>(p);
      case DType::float16: return math::half_bits_to_float(*reinterpret_cast<const unsigned short*>(p));
      case DType::uint8: return static_cast<float>(*reinterpret_cast<const unsigned char*>(p));
      case DType::boolean: return *reinterpret_cast<const unsigned char*>(p) ? 1.f : 0.f;
      case DType::int32: return static_cast<float>(*reinterpret_cast<const int*>(p));
      case DType::int64: return static_cast<float>(*reinterpret_cast<const long long*>(p));
    }
    return 0.f;
  }
  __device__ long long as_int(long long i) const {
    const char* p = data + i * stride;
    return dtype == DType::int64 ? *reinterpret_cast<const long long*>(p) : *reinterpret_cast<const int*>(p);
  }
};

// A (N, H, W) strided view read as float.
struct Planes {
  const char* data;
  long long stride[3];
  int height, width;
  DType dtype;
  __device__ float at(long long n, int y, int x) const {
    const char* p = data + n * stride[0] + y * stride[1] + x * stride[2];
    switch (dtype) {
      case DType::float32: return *reinterpret_cast<const float*>(p);
      case DType::float16: return math::half_bits_to_float(*reinterpret_cast<const unsigned short*>(p));
      case DType::boolean: return *reinterpret_cast<const unsigned char*>(p) ? 1.f : 0.f;
      default: return static_cast<float>(*reinterpret_cast<const unsigned char*>(p));
    }
  }
};

// The network-size value the frame resize reads: the deployable mask itself, or the raw head's
// binary mask (bilinear upsample of the logits, align_corners=False, > 0).
struct DeployableMask {
  Planes masks;
  __device__ float at(long long query, int y, int x) const { return masks.at(query, y, x); }
};
struct RawMask {
  Planes logits;
  int net_height, net_width;
  __device__ float logit(long long query, int y, int x) const {
    const math::MaskTap ty = math::torch_linear_tap(y, logits.height, net_height);
    const math::MaskTap tx = math::torch_linear_tap(x, logits.width, net_width);
    const float row0 = math::lerp_taps(logits.at(query, ty.i0, tx.i0), logits.at(query, ty.i0, tx.i1), tx);
    const float row1 = math::lerp_taps(logits.at(query, ty.i1, tx.i0), logits.at(query, ty.i1, tx.i1), tx);
    return math::blend_rows(row0, row1, ty.w0, ty.w1);
  }
  __device__ float at(long long query, int y, int x) const { return logit(query, y, x) > 0.f ? 1.f : 0.f; }
};

struct InstanceStats {
  unsigned long long area;
  int x_min, y_min, x_max, y_max;
};

// The box of a kept mask's nonzero values in the content region, network pixels (inclusive).
struct Support {
  int y_min, x_min, y_max, x_max;
};

// A kept instance's frame window [y0, y1) x [x0, x1), at crops + offset (row-major, window-wide).
struct FrameWindow {
  int y0, y1, x0, x1;
  long long offset;
};

// Where the crop kernel writes; read from device memory so that a captured graph follows growth.
struct CropTarget {
  unsigned char* data;
  long long capacity;
  long long needed;  // the windows' total, written by window_kernel
};

// What copy_crops moves: instance `slot`'s tight box, to compact + offset.
struct CompactJob {
  int slot, x0, y0, x1, y1;
  int pad;
  long long offset;
};

struct Picked {
  float score;
  int pad;
  long long label;
  long long query;
};

// Stable descending order of the values that pass (value >= threshold; NaN never passes): element i
// goes to position rank(i) = #{j passing: v[j] > v[i] or (v[j] == v[i] and j < i)} when below
// limit. counter receives the number passing. Each block stages the values in shared memory a tile
// at a time (n * n comparisons, n / kThreads global reads per thread). Launch with kThreads threads.
template <typename Get>
__global__ void rank_kernel(Get get, int n, float threshold, int limit, int* order, int* counter) {
  __shared__ float tile[kThreads];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const float v = i < n ? get(i) : 0.f;
  const bool passes = i < n && v >= threshold;
  if (passes) atomicAdd(counter, 1);
  int rank = 0;
  for (int base = 0; base < n; base += kThreads) {  // every thread takes part: the barriers are uniform
    const int j = base + static_cast<int>(threadIdx.x);
    if (j < n) tile[threadIdx.x] = get(j);
    __syncthreads();
    if (passes) {
      const int size = min(kThreads, n - base);
      for (int k = 0; k < size; ++k) {
        const float w = tile[k];
        if (!(w >= threshold)) continue;
        rank += (w > v || (w == v && base + k < i)) ? 1 : 0;
      }
    }
    __syncthreads();
  }
  if (passes && rank < limit) order[rank] = i;
}

struct GetVector {
  Vector1D v;
  __device__ float operator()(int i) const { return v.as_float(i); }
};
struct GetArray {
  const float* v;
  __device__ float operator()(int i) const { return v[i]; }
};
// Scores of the first min(*count, limit) candidates; the rest never pass.
struct GetCounted {
  const float* v;
  const int* count;
  int limit;
  __device__ float operator()(int i) const { return i < min(*count, limit) ? v[i] : __int_as_float(0x7fc00000); }
};

// Softmax over each query's C + 1 logits; the no-object column is dropped.
__global__ void softmax_kernel(Planes logits /* (1, Q, C+1) */, int queries, int classes, int no_object,
                               float* probs) {
  const int q = blockIdx.x * blockDim.x + threadIdx.x;
  if (q >= queries) return;
  float peak = -FLT_MAX;
  for (int c = 0; c <= classes; ++c) peak = fmaxf(peak, logits.at(0, q, c));
  float total = 0.f;
  for (int c = 0; c <= classes; ++c) total += expf(logits.at(0, q, c) - peak);
  int out = 0;
  for (int c = 0; c <= classes; ++c) {
    if (c == no_object) continue;
    probs[q * classes + out++] = expf(logits.at(0, q, c) - peak) / total;
  }
}

// Top-k candidates: their class probability and flat index, in rank order.
__global__ void gather_candidates_kernel(const float* probs, const int* order, const int* count, int limit,
                                         float* candidate_probs, int* candidate_index) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= limit || i >= *count) return;
  candidate_probs[i] = probs[order[i]];
  candidate_index[i] = order[i];
}

// Fused upsample + threshold + sigmoid sum over the network-size mask of each top-k candidate.
// A candidate whose class probability is below the threshold can never be kept (the mask factor is
// at most 1): its mask is never upsampled, as on the CPU.
__global__ void mask_score_kernel(RawMask raw, const int* candidate_index, const float* candidate_probs,
                                  float threshold, const int* count, int limit, int classes, double* sigmoid_sums,
                                  unsigned long long* mask_pixels) {
  const int i = blockIdx.y;
  if (i >= limit || i >= *count || !(candidate_probs[i] >= threshold)) return;
  const long long query = candidate_index[i] / classes;
  const long long pixels = static_cast<long long>(raw.net_height) * raw.net_width;
  float sum = 0.f;
  unsigned long long inside = 0;
  for (long long p = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; p < pixels;
       p += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float logit = raw.logit(query, static_cast<int>(p / raw.net_width), static_cast<int>(p % raw.net_width));
    if (logit > 0.f) {
      sum += math::sigmoid(logit);
      ++inside;
    }
  }
  __shared__ double block_sum[kThreads];
  __shared__ unsigned long long block_inside[kThreads];
  block_sum[threadIdx.x] = sum;
  block_inside[threadIdx.x] = inside;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      block_sum[threadIdx.x] += block_sum[threadIdx.x + s];
      block_inside[threadIdx.x] += block_inside[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(&sigmoid_sums[i], block_sum[0]);
    atomicAdd(&mask_pixels[i], block_inside[0]);
  }
}

__global__ void instance_score_kernel(const float* candidate_probs, const double* sigmoid_sums,
                                      const unsigned long long* mask_pixels, const int* count, int limit,
                                      float* scores) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= limit || i >= *count) return;
  scores[i] = math::instance_score(candidate_probs[i], sigmoid_sums[i], static_cast<long long>(mask_pixels[i]));
}

__global__ void init_stats_kernel(InstanceStats* stats, Support* supports, int limit) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= limit) return;
  stats[i] = InstanceStats{0ull, INT_MAX, INT_MAX, -1, -1};
  supports[i] = Support{INT_MAX, INT_MAX, -1, -1};
}

// Block-wide min / max of a box (and sum of a count), then one atomic per field per block.
// Every thread of the block calls it (it holds barriers); kThreads threads, a power of two.
__device__ void reduce_box_to(int count, int x_min, int y_min, int x_max, int y_max, unsigned long long* total,
                              int* out_x_min, int* out_y_min, int* out_x_max, int* out_y_max) {
  __shared__ int block_count[kThreads], block_x_min[kThreads], block_y_min[kThreads], block_x_max[kThreads],
      block_y_max[kThreads];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  block_count[tid] = count;
  block_x_min[tid] = x_min;
  block_y_min[tid] = y_min;
  block_x_max[tid] = x_max;
  block_y_max[tid] = y_max;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) {
      block_count[tid] += block_count[tid + s];
      block_x_min[tid] = min(block_x_min[tid], block_x_min[tid + s]);
      block_y_min[tid] = min(block_y_min[tid], block_y_min[tid + s]);
      block_x_max[tid] = max(block_x_max[tid], block_x_max[tid + s]);
      block_y_max[tid] = max(block_y_max[tid], block_y_max[tid + s]);
    }
    __syncthreads();
  }
  if (tid == 0 && block_count[0] > 0) {
    if (total) atomicAdd(total, static_cast<unsigned long long>(block_count[0]));
    atomicMin(out_x_min, block_x_min[0]);
    atomicMin(out_y_min, block_y_min[0]);
    atomicMax(out_x_max, block_x_max[0]);
    atomicMax(out_y_max, block_y_max[0]);
  }
}

// One kept instance per blockIdx.y: the box of its nonzero network-size values inside the content
// region (NaN counts as nonzero, as on the CPU). Grid-strided over the content pixels.
template <typename Source>
__global__ void support_kernel(Source source, const int* order, const int* query_of, int query_divisor,
                               const int* count, int limit, int content_height, int content_width, Support* supports) {
  const int n = blockIdx.y;
  if (n >= limit || n >= *count) return;  // uniform over the block
  const int candidate = order[n];
  const long long query = query_of ? query_of[candidate] / query_divisor : candidate;
  const long long pixels = static_cast<long long>(content_height) * content_width;
  int found = 0, x_min = INT_MAX, y_min = INT_MAX, x_max = -1, y_max = -1;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  for (long long p = blockIdx.x * static_cast<long long>(kThreads) + tid; p < pixels;
       p += static_cast<long long>(gridDim.x) * kThreads) {
    const int y = static_cast<int>(p / content_width), x = static_cast<int>(p % content_width);
    if (source.at(query, y, x) != 0.f) {
      found = 1;
      x_min = min(x_min, x);
      y_min = min(y_min, y);
      x_max = max(x_max, x);
      y_max = max(y_max, y);
    }
  }
  Support& s = supports[n];
  reduce_box_to(found, x_min, y_min, x_max, y_max, nullptr, &s.x_min, &s.y_min, &s.x_max, &s.y_max);
}

// One thread: each kept instance's frame window from its support (the CPU's plan_windows), laid out
// back to back; the total goes to the crop target.
__global__ void window_kernel(const Support* supports, const int* count, int limit, ResizeTransform t,
                              FrameWindow* windows, CropTarget* target) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const int kept = min(*count, limit);
  long long offset = 0;
  for (int n = 0; n < kept; ++n) {
    const Support s = supports[n];
    FrameWindow w{0, 0, 0, 0, offset};
    if (s.y_max >= 0) {
      math::cv_linear_output_range(true, t.content_height, t.frame_height, s.y_min, s.y_max + 1, w.y0, w.y1);
      math::cv_linear_output_range(false, t.content_width, t.frame_width, s.x_min, s.x_max + 1, w.x0, w.x1);
      if (w.y0 < w.y1 && w.x0 < w.x1) offset += static_cast<long long>(w.y1 - w.y0) * (w.x1 - w.x0);
      else w.y0 = w.y1 = w.x0 = w.x1 = 0;
    }
    windows[n] = w;
  }
  target->needed = offset;
}

// One kept instance per blockIdx.z: cv2-resize of its network-size mask (content region) to the
// frame, > 0.5, for the pixels of its window only, into its crop; area and tight box by block
// reduction. Window rows and columns are grid-strided. Nothing is written when the windows
// outgrew the crop scratch (read_results grows it and runs this again).
template <typename Source>
__global__ void frame_mask_kernel(Source source, const int* order, const int* query_of, int query_divisor,
                                  const int* count, int limit, ResizeTransform t, const FrameWindow* windows,
                                  const CropTarget* target, InstanceStats* stats) {
  const int n = blockIdx.z;
  if (n >= limit || n >= *count) return;  // uniform over the block: no thread reaches the barriers
  const CropTarget crops = *target;
  if (crops.needed > crops.capacity) return;
  const FrameWindow w = windows[n];
  const int width = w.x1 - w.x0, height = w.y1 - w.y0;
  const int candidate = order[n];
  const long long query = query_of ? query_of[candidate] / query_divisor : candidate;
  int area = 0, x_min = INT_MAX, y_min = INT_MAX, x_max = -1, y_max = -1;
  for (int dx = blockIdx.x * blockDim.x + threadIdx.x; dx < width; dx += gridDim.x * blockDim.x) {
    const int x = w.x0 + dx;
    const math::MaskTap tx = math::cv_linear_tap_x(x, t.content_width, t.frame_width);
    for (int dy = blockIdx.y * blockDim.y + threadIdx.y; dy < height; dy += gridDim.y * blockDim.y) {
      const int y = w.y0 + dy;
      const math::MaskTap ty = math::cv_linear_tap_y(y, t.content_height, t.frame_height);
      const float row0 = math::lerp_taps(source.at(query, ty.i0, tx.i0), source.at(query, ty.i0, tx.i1), tx);
      const float row1 = math::lerp_taps(source.at(query, ty.i1, tx.i0), source.at(query, ty.i1, tx.i1), tx);
      const bool on = math::blend_above_half(row0, row1, ty.w0, ty.w1);
      crops.data[w.offset + static_cast<long long>(dy) * width + dx] = on ? 1 : 0;
      if (on) {
        ++area;
        x_min = min(x_min, x);
        x_max = max(x_max, x);
        y_min = min(y_min, y);
        y_max = max(y_max, y);
      }
    }
  }
  InstanceStats& s = stats[n];
  reduce_box_to(area, x_min, y_min, x_max, y_max, &s.area, &s.x_min, &s.y_min, &s.x_max, &s.y_max);
}

// One kept instance per blockIdx.y: its tight box cut out of its window into compact.
__global__ void compact_kernel(const unsigned char* crops, const FrameWindow* windows, const CompactJob* jobs,
                               int job_count, unsigned char* compact) {
  const int j = blockIdx.y;
  if (j >= job_count) return;
  const CompactJob job = jobs[j];
  const FrameWindow w = windows[job.slot];
  const int width = job.x1 - job.x0;
  const long long pixels = static_cast<long long>(job.y1 - job.y0) * width;
  for (long long p = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; p < pixels;
       p += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int y = job.y0 + static_cast<int>(p / width), x = job.x0 + static_cast<int>(p % width);
    compact[job.offset + p] = crops[w.offset + static_cast<long long>(y - w.y0) * (w.x1 - w.x0) + (x - w.x0)];
  }
}

// Score, label and query of each kept instance, for the host.
__global__ void pick_deployable_kernel(GetVector scores, Vector1D classes, const int* order, const int* count,
                                       int limit, Picked* picked) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= limit || n >= *count) return;
  const int q = order[n];
  picked[n] = Picked{scores(q), 0, classes.as_int(q), q};
}

__global__ void pick_raw_kernel(const float* scores, const int* candidate_index, int classes, const int* order,
                                const int* count, int limit, Picked* picked) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= limit || n >= *count) return;
  const int candidate = order[n];
  const int flat = candidate_index[candidate];
  picked[n] = Picked{scores[candidate], 0, flat % classes, flat / classes};
}

// Grid-stride over the H * W output pixels: no grid dimension limit applies.
__global__ void instance_map_kernel(Planes masks, int count, int* out) {
  const long long pixels = static_cast<long long>(masks.height) * masks.width;
  for (long long p = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; p < pixels;
       p += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int y = static_cast<int>(p / masks.width), x = static_cast<int>(p % masks.width);
    int label = 0;
    for (int n = 0; n < count; ++n) {
      if (masks.at(n, y, x) != 0.f) {
        label = n + 1;
        break;
      }
    }
    out[p] = label;
  }
}

// Grid-stride over the N * H * packed_width output bytes.
__global__ void pack_kernel(Planes masks, long long count, int packed_width, unsigned char* out) {
  const long long bytes = count * masks.height * packed_width;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < bytes;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int xb = static_cast<int>(i % packed_width);
    const long long row = i / packed_width;
    const int y = static_cast<int>(row % masks.height);
    const long long n = row / masks.height;
    unsigned int byte = 0;
    for (int bit = 0; bit < 8; ++bit) {
      const int x = xb * 8 + bit;
      if (x < masks.width && masks.at(n, y, x) != 0.f) byte |= 0x80u >> bit;
    }
    out[i] = static_cast<unsigned char>(byte);
  }
}

// ---- host side ----------------------------------------------------------------------------------

std::string dims(const TensorView& v) {
  std::string s = "(";
  for (int i = 0; i < v.ndim; ++i) s += (i ? ", " : "") + std::to_string(v.shape[i]);
  return s + (v.ndim == 1 ? ",)" : ")");
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

void require_gpu(const TensorView& v, const char* arg) {
  require(v.device == Device::cuda, std::string(arg) + ": expected GPU memory");
}

Vector1D vector_of(const TensorView& v) { return Vector1D{static_cast<const char*>(v.data), v.strides[0], v.dtype}; }

Planes planes_of(const TensorView& v) {
  Planes p{};
  p.data = static_cast<const char*>(v.data);
  for (int i = 0; i < 3; ++i) p.stride[i] = v.strides[i];
  p.height = static_cast<int>(v.shape[1]);
  p.width = static_cast<int>(v.shape[2]);
  p.dtype = v.dtype;
  return p;
}

// 2-D views (Q, C+1) are read as (1, Q, C+1).
Planes planes_of_2d(const TensorView& v) {
  Planes p{};
  p.data = static_cast<const char*>(v.data);
  p.stride[0] = 0;
  p.stride[1] = v.strides[0];
  p.stride[2] = v.strides[1];
  p.height = static_cast<int>(v.shape[0]);
  p.width = static_cast<int>(v.shape[1]);
  p.dtype = v.dtype;
  return p;
}

int blocks_for(long long n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// Blocks for a grid-stride loop over n items: enough to fill any GPU, never a zero-size launch.
unsigned grid_stride_blocks(long long n) {
  return static_cast<unsigned>(std::max<long long>(1, std::min<long long>((n + kThreads - 1) / kThreads, 1 << 16)));
}

// Points the kernels at the crop scratch (ordered on the stream; the pinned source is rewritten only
// after the stream was waited for).
void publish_crop_target(PostprocessWorkspace& w, cudaStream_t stream) {
  auto* staged = static_cast<CropTarget*>(w.host_staging.data());
  *staged = CropTarget{w.crops.as<unsigned char>(), static_cast<long long>(w.crops.size()), 0};
  M2F_CUDA_CHECK(cudaMemcpyAsync(w.crop_target.data(), staged, sizeof(CropTarget), cudaMemcpyHostToDevice, stream));
}

// Sizes the scratch for `limit` instances of a frame and clears the counters and stats. The crop
// scratch starts at one frame's worth of pixels and grows in read_results when a frame needs more;
// nothing is allocated or published once the sizes are settled (a graph capture allocates nothing).
void prepare(PostprocessWorkspace& w, const ResizeTransform& t, int limit, int candidates, cudaStream_t stream) {
  w.frame_height = t.frame_height;
  w.frame_width = t.frame_width;
  w.limit = limit;
  w.kept_counter = 0;
  w.relaunch_crops = nullptr;
  const std::size_t slots = static_cast<std::size_t>(limit > 0 ? limit : 1);
  const std::size_t cand = static_cast<std::size_t>(candidates > 0 ? candidates : 1);
  w.order.ensure(cand * sizeof(int));
  w.counters.ensure(4 * sizeof(int));
  w.supports.ensure(slots * sizeof(Support));
  w.windows.ensure(slots * sizeof(FrameWindow));
  w.stats.ensure(slots * sizeof(InstanceStats));
  w.picked.ensure(slots * sizeof(Picked));
  w.host_stats.ensure(4 * sizeof(int) + slots * (sizeof(InstanceStats) + sizeof(Picked) + sizeof(FrameWindow)));
  w.host_staging.ensure(std::max(sizeof(CropTarget), slots * sizeof(CompactJob)));
  const bool fresh_target = w.crop_target.size() == 0;
  w.crop_target.ensure(sizeof(CropTarget));
  const std::size_t frame_pixels = static_cast<std::size_t>(t.frame_height) * static_cast<std::size_t>(t.frame_width);
  const void* before = w.crops.data();
  w.crops.ensure(std::max<std::size_t>(frame_pixels, 1 << 16));
  if (fresh_target || w.crops.data() != before) publish_crop_target(w, stream);
  M2F_CUDA_CHECK(cudaMemsetAsync(w.counters.data(), 0, 4 * sizeof(int), stream));
  M2F_LAUNCH(init_stats_kernel, blocks_for(static_cast<long long>(slots)), kThreads, stream)(
      w.stats.as<InstanceStats>(), w.supports.as<Support>(), static_cast<int>(slots));
  M2F_CUDA_CHECK(cudaGetLastError());
}

// Supports, windows, then the frame masks inside the windows. The crop kernel's launch is kept
// (it holds only device pointers and values) so read_results can run it again after growing crops.
template <typename Source>
void launch_frame_masks(const Source& source, const int* order, const int* query_of, int query_divisor,
                        const int* count, const ResizeTransform& t, PostprocessWorkspace& w, cudaStream_t stream) {
  if (w.limit <= 0) return;
  const long long content = static_cast<long long>(t.content_height) * t.content_width;
  const dim3 support_grid(static_cast<unsigned>(std::min<long long>(blocks_for(content), 64)), w.limit);
  M2F_LAUNCH(support_kernel<Source>, support_grid, kThreads, stream)(source, order, query_of, query_divisor, count,
                                                                 w.limit, t.content_height, t.content_width,
                                                                 w.supports.as<Support>());
  M2F_CUDA_CHECK(cudaGetLastError());
  M2F_LAUNCH(window_kernel, 1, 1, stream)(w.supports.as<Support>(), count, w.limit, t, w.windows.as<FrameWindow>(),
                                          w.crop_target.as<CropTarget>());
  M2F_CUDA_CHECK(cudaGetLastError());
  const int limit = w.limit;
  w.relaunch_crops = [source, order, query_of, query_divisor, count, limit, t](PostprocessWorkspace& ws,
                                                                                cudaStream_t s) {
    const dim3 block(32, kThreads / 32);
    // Windows are unknown here (graphs): a fixed grid per instance, grid-strided over its window.
    const dim3 grid(static_cast<unsigned>(std::min((t.frame_width + 31) / 32, 16)),
                    static_cast<unsigned>(std::min((t.frame_height + 7) / 8, 32)), static_cast<unsigned>(limit));
    M2F_LAUNCH(frame_mask_kernel<Source>, grid, block, s)(source, order, query_of, query_divisor, count, limit, t,
                                                          ws.windows.as<FrameWindow>(),
                                                          ws.crop_target.as<CropTarget>(),
                                                          ws.stats.as<InstanceStats>());
    M2F_CUDA_CHECK(cudaGetLastError());
  };
  w.relaunch_crops(w, stream);
}

// As the CPU's detail::check_transform: the kernels index the content region with these sizes.
void check_transform(const ResizeTransform& t) {
  require(t.frame_height > 0 && t.frame_width > 0 && t.net_height > 0 && t.net_width > 0 && t.content_height > 0 &&
              t.content_width > 0 && t.content_height <= t.net_height && t.content_width <= t.net_width,
          "transform: inconsistent sizes");
}

void check_transform(const ResizeTransform& t, std::int64_t height, std::int64_t width, const char* arg) {
  check_transform(t);
  require(height == t.net_height && width == t.net_width,
          std::string(arg) + ": masks are " + std::to_string(height) + "x" + std::to_string(width) +
              " but the transform's network input is " + std::to_string(t.net_height) + "x" +
              std::to_string(t.net_width));
}

}  // namespace

void enqueue_postprocess_deployable(const TensorView& masks, const TensorView& scores, const TensorView& classes,
                                    const ResizeTransform& transform, const SelectionOptions& options,
                                    PostprocessWorkspace& w, cudaStream_t stream) {
  // --- types
  require(masks.dtype == DType::float32 || masks.dtype == DType::float16 || masks.dtype == DType::uint8 ||
              masks.dtype == DType::boolean,
          std::string("masks: expected float32, float16, uint8 or bool, got ") + dtype_name(masks.dtype));
  require(scores.dtype == DType::float32 || scores.dtype == DType::float16,
          std::string("scores: expected float32 or float16, got ") + dtype_name(scores.dtype));
  require(classes.dtype == DType::int32 || classes.dtype == DType::int64,
          std::string("classes: expected int32 or int64, got ") + dtype_name(classes.dtype));
  // --- sizes
  require(masks.ndim == 3, "masks: expected (K, H, W), got " + dims(masks));
  require(scores.ndim == 1 && scores.shape[0] == masks.shape[0],
          "scores: expected (" + std::to_string(masks.shape[0]) + ",), got " + dims(scores));
  require(classes.ndim == 1 && classes.shape[0] == masks.shape[0],
          "classes: expected (" + std::to_string(masks.shape[0]) + ",), got " + dims(classes));
  check_transform(transform, masks.shape[1], masks.shape[2], "masks");
  require(options.max_instances >= 0, "max_instances: must be >= 0");
  // --- device
  require_gpu(masks, "masks");
  require_gpu(scores, "scores");
  require_gpu(classes, "classes");

  const int k = static_cast<int>(masks.shape[0]);
  const int limit = std::min(k, options.max_instances);
  require(limit <= 65535, "masks: at most 65535 instances per image are kept on the GPU");
  prepare(w, transform, limit, k, stream);
  int* counters = w.counters.as<int>();
  if (k > 0) {
    M2F_LAUNCH(rank_kernel, blocks_for(k), kThreads, stream)(GetVector{vector_of(scores)}, k, options.score_threshold,
                                                        limit, w.order.as<int>(), counters);
    M2F_CUDA_CHECK(cudaGetLastError());
  }
  launch_frame_masks(DeployableMask{planes_of(masks)}, w.order.as<int>(), nullptr, 1, counters, transform, w,
                     stream);
  if (limit > 0) {
    M2F_LAUNCH(pick_deployable_kernel, blocks_for(limit), kThreads, stream)(GetVector{vector_of(scores)},
                                                                       vector_of(classes), w.order.as<int>(),
                                                                       counters, limit, w.picked.as<Picked>());
    M2F_CUDA_CHECK(cudaGetLastError());
  }
}

void enqueue_postprocess_raw(const TensorView& class_logits, const TensorView& mask_logits,
                             const ResizeTransform& transform, const RawHeadOptions& raw,
                             const SelectionOptions& options, PostprocessWorkspace& w, cudaStream_t stream) {
  // --- types
  require(class_logits.dtype == DType::float32 || class_logits.dtype == DType::float16,
          std::string("class_logits: expected float32 or float16, got ") + dtype_name(class_logits.dtype));
  require(mask_logits.dtype == DType::float32 || mask_logits.dtype == DType::float16,
          std::string("mask_logits: expected float32 or float16, got ") + dtype_name(mask_logits.dtype));
  // --- sizes
  require(class_logits.ndim == 2 && class_logits.shape[1] >= 2,
          "class_logits: expected (Q, C+1) with C >= 1, got " + dims(class_logits));
  require(mask_logits.ndim == 3 && mask_logits.shape[0] == class_logits.shape[0],
          "mask_logits: expected (" + std::to_string(class_logits.shape[0]) + ", h, w), got " + dims(mask_logits));
  // An empty (Q, 0, w) view would make every upsampling tap read element (q, 0, 0), out of bounds.
  require(mask_logits.shape[1] > 0 && mask_logits.shape[2] > 0,
          "mask_logits: expected h, w >= 1, got " + dims(mask_logits));
  require(class_logits.shape[0] * (class_logits.shape[1] - 1) <= INT_MAX,
          "class_logits: Q * C must fit in 32 bits, got " + dims(class_logits));
  check_transform(transform);
  const int queries = static_cast<int>(class_logits.shape[0]);
  const int classes = static_cast<int>(class_logits.shape[1]) - 1;
  const int no_object = raw.no_object_index < 0 ? classes + 1 + raw.no_object_index : raw.no_object_index;
  require(no_object >= 0 && no_object <= classes,
          "no_object_index: must be in [-" + std::to_string(classes + 1) + ", " + std::to_string(classes) + "], got " +
              std::to_string(raw.no_object_index));
  require(raw.topk >= 1 && raw.topk <= 65535, "topk: must be in [1, 65535], got " + std::to_string(raw.topk));
  require(options.max_instances >= 0, "max_instances: must be >= 0");
  // --- device
  require_gpu(class_logits, "class_logits");
  require_gpu(mask_logits, "mask_logits");

  const int flat = queries * classes;
  const int topk = std::min(raw.topk, flat);
  const int limit = std::min(topk, options.max_instances);
  prepare(w, transform, limit, std::max(flat, 1), stream);
  const std::size_t cand = static_cast<std::size_t>(std::max(topk, 1));
  w.probs.ensure(static_cast<std::size_t>(std::max(flat, 1)) * sizeof(float));
  w.candidate_probs.ensure(cand * sizeof(float));
  w.candidate_index.ensure(cand * sizeof(int));
  w.sigmoid_sums.ensure(cand * sizeof(double));
  w.mask_pixels.ensure(cand * sizeof(unsigned long long));
  w.scores.ensure(cand * sizeof(float));
  // The second ranking reuses `order`'s tail: [0, flat) for the top-k, then [flat, flat + limit).
  w.order.ensure((static_cast<std::size_t>(std::max(flat, 1)) + cand) * sizeof(int));
  int* counters = w.counters.as<int>();
  int* topk_order = w.order.as<int>();
  int* kept_order = topk_order + std::max(flat, 1);
  w.kept_counter = 1;  // counters[0] counts the top-k candidates, counters[1] the kept instances
  M2F_CUDA_CHECK(cudaMemsetAsync(w.sigmoid_sums.data(), 0, cand * sizeof(double), stream));
  M2F_CUDA_CHECK(cudaMemsetAsync(w.mask_pixels.data(), 0, cand * sizeof(unsigned long long), stream));
  if (queries == 0 || topk == 0) return;

  M2F_LAUNCH(softmax_kernel, blocks_for(queries), kThreads, stream)(planes_of_2d(class_logits), queries, classes,
                                                               no_object, w.probs.as<float>());
  M2F_CUDA_CHECK(cudaGetLastError());
  // Top-k over Q*C: every finite probability passes; ties keep the lower flat index first.
  M2F_LAUNCH(rank_kernel, blocks_for(flat), kThreads, stream)(GetArray{w.probs.as<float>()}, flat, -FLT_MAX, topk,
                                                         topk_order, counters);
  M2F_CUDA_CHECK(cudaGetLastError());
  M2F_LAUNCH(gather_candidates_kernel, blocks_for(topk), kThreads, stream)(
      w.probs.as<float>(), topk_order, counters, topk, w.candidate_probs.as<float>(), w.candidate_index.as<int>());
  M2F_CUDA_CHECK(cudaGetLastError());
  RawMask source{planes_of(mask_logits), transform.net_height, transform.net_width};
  const long long net_pixels = static_cast<long long>(transform.net_height) * transform.net_width;
  const dim3 score_grid(static_cast<unsigned>(std::min<long long>(blocks_for(net_pixels), 64)), topk);
  M2F_LAUNCH(mask_score_kernel, score_grid, kThreads, stream)(source, w.candidate_index.as<int>(),
                                                         w.candidate_probs.as<float>(), options.score_threshold,
                                                         counters, topk, classes,
                                                         w.sigmoid_sums.as<double>(),
                                                         w.mask_pixels.as<unsigned long long>());
  M2F_CUDA_CHECK(cudaGetLastError());
  M2F_LAUNCH(instance_score_kernel, blocks_for(topk), kThreads, stream)(
      w.candidate_probs.as<float>(), w.sigmoid_sums.as<double>(), w.mask_pixels.as<unsigned long long>(), counters,
      topk, w.scores.as<float>());
  M2F_CUDA_CHECK(cudaGetLastError());
  M2F_LAUNCH(rank_kernel, blocks_for(topk), kThreads, stream)(GetCounted{w.scores.as<float>(), counters, topk}, topk,
                                                         options.score_threshold, limit, kept_order, counters + 1);
  M2F_CUDA_CHECK(cudaGetLastError());
  launch_frame_masks(source, kept_order, w.candidate_index.as<int>(), classes, counters + 1, transform, w, stream);
  if (limit > 0) {
    M2F_LAUNCH(pick_raw_kernel, blocks_for(limit), kThreads, stream)(w.scores.as<float>(), w.candidate_index.as<int>(),
                                                                classes, kept_order, counters + 1, limit,
                                                                w.picked.as<Picked>());
    M2F_CUDA_CHECK(cudaGetLastError());
  }
}

FrameInstances read_results(PostprocessWorkspace& w, cudaStream_t stream) {
  const int limit = w.limit;
  const std::size_t capacity = static_cast<std::size_t>(limit > 0 ? limit : 1);
  char* host = static_cast<char*>(w.host_stats.data());
  int* counters = reinterpret_cast<int*>(host);
  auto* stats = reinterpret_cast<InstanceStats*>(host + 4 * sizeof(int));
  auto* picked = reinterpret_cast<Picked*>(host + 4 * sizeof(int) + capacity * sizeof(InstanceStats));
  auto* windows = reinterpret_cast<FrameWindow*>(host + 4 * sizeof(int) +
                                                 capacity * (sizeof(InstanceStats) + sizeof(Picked)));
  auto* target = static_cast<CropTarget*>(w.host_staging.data());
  auto fetch = [&] {
    M2F_CUDA_CHECK(cudaMemcpyAsync(counters, w.counters.data(), 4 * sizeof(int), cudaMemcpyDeviceToHost, stream));
    M2F_CUDA_CHECK(
        cudaMemcpyAsync(stats, w.stats.data(), capacity * sizeof(InstanceStats), cudaMemcpyDeviceToHost, stream));
    M2F_CUDA_CHECK(cudaMemcpyAsync(picked, w.picked.data(), capacity * sizeof(Picked), cudaMemcpyDeviceToHost, stream));
    M2F_CUDA_CHECK(
        cudaMemcpyAsync(windows, w.windows.data(), capacity * sizeof(FrameWindow), cudaMemcpyDeviceToHost, stream));
    M2F_CUDA_CHECK(cudaMemcpyAsync(target, w.crop_target.data(), sizeof(CropTarget), cudaMemcpyDeviceToHost, stream));
    M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
  };
  fetch();
  if (limit > 0 && target->needed > target->capacity) {
    // The windows outgrew the crop scratch, so the crop kernel wrote nothing: grow (a quarter more,
    // for the next frames) and run it again.
    if (!w.relaunch_crops) throw std::logic_error("read_results: no post-processing call to complete");
    w.crops.ensure(static_cast<std::size_t>(target->needed + target->needed / 4));
    publish_crop_target(w, stream);
    w.relaunch_crops(w, stream);
    fetch();
  }

  const int kept = std::min(counters[w.kept_counter], limit);
  FrameInstances result;
  result.height = w.frame_height;
  result.width = w.frame_width;
  w.kept_slots.clear();
  for (int n = 0; n < kept; ++n) {
    if (stats[n].area == 0) continue;  // came out empty at the frame size
    w.kept_slots.push_back(n);
    result.scores.push_back(picked[n].score);
    result.labels.push_back(picked[n].label);
    result.query_indices.push_back(picked[n].query);
    result.areas.push_back(static_cast<std::int64_t>(stats[n].area));
    result.boxes.push_back(static_cast<float>(stats[n].x_min));
    result.boxes.push_back(static_cast<float>(stats[n].y_min));
    result.boxes.push_back(static_cast<float>(stats[n].x_max + 1));
    result.boxes.push_back(static_cast<float>(stats[n].y_max + 1));
    result.crop_offsets.push_back(result.crop_offsets.back() +
                                  static_cast<std::int64_t>(stats[n].x_max + 1 - stats[n].x_min) *
                                      (stats[n].y_max + 1 - stats[n].y_min));
  }
  result.count = static_cast<std::int64_t>(w.kept_slots.size());
  return result;
}

void copy_crops(PostprocessWorkspace& w, const FrameInstances& result, void* dst, cudaStream_t stream) {
  require(result.count == static_cast<std::int64_t>(w.kept_slots.size()) &&
              static_cast<std::int64_t>(result.crop_offsets.size()) == result.count + 1,
          "copy_crops: the result does not come from this workspace's last read_results");
  const std::size_t bytes = static_cast<std::size_t>(result.crop_offsets.back());
  if (result.count == 0 || bytes == 0) return;
  const int jobs = static_cast<int>(result.count);
  w.host_staging.ensure(static_cast<std::size_t>(jobs) * sizeof(CompactJob));
  auto* staged = static_cast<CompactJob*>(w.host_staging.data());
  int widest = 1;
  for (int i = 0; i < jobs; ++i) {
    const float* box = result.boxes.data() + 4 * i;
    staged[i] = CompactJob{static_cast<int>(w.kept_slots[static_cast<std::size_t>(i)]), static_cast<int>(box[0]),
                           static_cast<int>(box[1]), static_cast<int>(box[2]), static_cast<int>(box[3]), 0,
                           result.crop_offsets[static_cast<std::size_t>(i)]};
    widest = std::max<long long>(widest, blocks_for(result.crop_offsets[static_cast<std::size_t>(i) + 1] -
                                                    result.crop_offsets[static_cast<std::size_t>(i)]));
  }
  w.compact_jobs.ensure(static_cast<std::size_t>(jobs) * sizeof(CompactJob));
  w.compact.ensure(bytes);
  M2F_CUDA_CHECK(cudaMemcpyAsync(w.compact_jobs.data(), staged, static_cast<std::size_t>(jobs) * sizeof(CompactJob),
                                 cudaMemcpyHostToDevice, stream));
  const dim3 grid(static_cast<unsigned>(std::min(widest, 256)), static_cast<unsigned>(jobs));
  M2F_LAUNCH(compact_kernel, grid, kThreads, stream)(w.crops.as<unsigned char>(), w.windows.as<FrameWindow>(),
                                                     w.compact_jobs.as<CompactJob>(), jobs,
                                                     w.compact.as<unsigned char>());
  M2F_CUDA_CHECK(cudaGetLastError());
  M2F_CUDA_CHECK(cudaMemcpyAsync(dst, w.compact.data(), bytes, cudaMemcpyDefault, stream));
  M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void instance_map(const TensorView& masks, const TensorView& out, cudaStream_t stream) {
  // --- types
  require(masks.dtype == DType::uint8 || masks.dtype == DType::boolean,
          std::string("masks: expected uint8 or bool, got ") + dtype_name(masks.dtype));
  require(out.dtype == DType::int32, std::string("out: expected int32, got ") + dtype_name(out.dtype));
  // --- sizes
  require(masks.ndim == 3, "masks: expected (N, H, W), got " + dims(masks));
  require(out.ndim == 2 && out.shape[0] == masks.shape[1] && out.shape[1] == masks.shape[2] && out.is_contiguous(),
          "out: expected a C-contiguous (" + std::to_string(masks.shape[1]) + ", " + std::to_string(masks.shape[2]) +
              ") array, got " + dims(out));
  // --- device
  require_gpu(masks, "masks");
  require_gpu(out, "out");
  require(masks.shape[0] <= INT_MAX, "masks: too many instances");
  if (masks.shape[1] == 0 || masks.shape[2] == 0) return;
  M2F_LAUNCH(instance_map_kernel, grid_stride_blocks(masks.shape[1] * masks.shape[2]), kThreads, stream)(
      planes_of(masks), static_cast<int>(masks.shape[0]), static_cast<int*>(out.data));
  M2F_CUDA_CHECK(cudaGetLastError());
}

void pack_masks(const TensorView& masks, const TensorView& out, cudaStream_t stream) {
  // --- types
  require(masks.dtype == DType::uint8 || masks.dtype == DType::boolean,
          std::string("masks: expected uint8 or bool, got ") + dtype_name(masks.dtype));
  require(out.dtype == DType::uint8, std::string("out: expected uint8, got ") + dtype_name(out.dtype));
  // --- sizes
  require(masks.ndim == 3, "masks: expected (N, H, W), got " + dims(masks));
  const std::int64_t packed_width = (masks.shape[2] + 7) / 8;
  require(out.ndim == 3 && out.shape[0] == masks.shape[0] && out.shape[1] == masks.shape[1] &&
              out.shape[2] == packed_width && out.is_contiguous(),
          "out: expected a C-contiguous (" + std::to_string(masks.shape[0]) + ", " + std::to_string(masks.shape[1]) +
              ", " + std::to_string(packed_width) + ") array, got " + dims(out));
  // --- device
  require_gpu(masks, "masks");
  require_gpu(out, "out");
  if (masks.shape[0] == 0 || masks.shape[1] == 0 || packed_width == 0) return;
  M2F_LAUNCH(pack_kernel, grid_stride_blocks(masks.shape[0] * masks.shape[1] * packed_width), kThreads, stream)(
      planes_of(masks), masks.shape[0], static_cast<int>(packed_width), static_cast<unsigned char*>(out.data));
  M2F_CUDA_CHECK(cudaGetLastError());
}

}  // namespace m2f::cuda

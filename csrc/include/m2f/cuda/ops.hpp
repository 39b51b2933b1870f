// The GPU twins of the CPU core (preprocess.hpp, postprocess.hpp). Same options, same results;
// inputs are TensorViews whose data is in device memory (any byte strides), work is enqueued on a
// caller's stream. Compiled only in CUDA builds.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "m2f/cuda/buffers.hpp"
#include "m2f/postprocess.hpp"
#include "m2f/preprocess.hpp"
#include "m2f/tensor_view.hpp"
#include "m2f/transform.hpp"

namespace m2f::cuda {

// One fused kernel per frame: bilinear sample (cv2 INTER_LINEAR positions), channel order,
// normalise, planar RGB, float32 or float16; stretch or letterbox. frames[b] (H, W, C) uint8 on the
// device; out (B, 3, net_h, net_w) C-contiguous on the device. Asynchronous on `stream`.
std::vector<ResizeTransform> preprocess(const std::vector<TensorView>& frames, const TensorView& out,
                                        const PreprocessOptions& options, cudaStream_t stream);

// Scratch reused from call to call (grown, never shrunk) so steady-state frames allocate nothing.
// Every launch is guarded by counts kept on the device, so a whole call can be captured in a CUDA
// graph: the host learns how many instances there are only at the end (read_results).
struct PostprocessWorkspace {
  DeviceBuffer order;           // int32: kept candidates, best first
  DeviceBuffer counters;        // int32: [passing candidates, passing instances]
  DeviceBuffer candidate_probs; // float: raw head, class probability of each top-k candidate
  DeviceBuffer candidate_index; // int32: raw head, flat query * C + class of each top-k candidate
  DeviceBuffer probs;           // float: raw head, Q * C softmax scores
  DeviceBuffer sigmoid_sums;    // double
  DeviceBuffer mask_pixels;     // unsigned long long
  DeviceBuffer scores;          // float: raw head, instance score of each top-k candidate
  DeviceBuffer masks;           // uint8: max_instances * H * W frame masks
  DeviceBuffer stats;           // per instance: area (int64) and bbox (4 x int32)
  DeviceBuffer picked;          // per instance: score (float), label (int64), query (int64)
  PinnedBuffer host_stats;      // staging for counters, stats and picked
  int frame_height = 0, frame_width = 0, limit = 0;
  int kept_counter = 0;  // which counter holds the number of kept instances
};

// Enqueue the deployable path: threshold + stable descending sort of the scores on the device, and
// for the kept ones only, the resize to the frame with boxes and areas.
void enqueue_postprocess_deployable(const TensorView& masks, const TensorView& scores, const TensorView& classes,
                                    const ResizeTransform& transform, const SelectionOptions& options,
                                    PostprocessWorkspace& workspace, cudaStream_t stream);

// Enqueue the raw-head path: softmax, top-k over Q*C, fused upsample + sigmoid-sum scoring of the
// top-k queries (no full-size mask is stored for them), selection, then the frame masks of the kept.
void enqueue_postprocess_raw(const TensorView& class_logits, const TensorView& mask_logits,
                             const ResizeTransform& transform, const RawHeadOptions& raw,
                             const SelectionOptions& options, PostprocessWorkspace& workspace, cudaStream_t stream);

// Waits for the stream and returns the small per-instance arrays of the kept, non-empty instances
// (FrameInstances::masks stays empty) and, in `slots`, where each one's frame mask sits in the
// workspace. Then copy_kept_masks brings exactly those masks wherever the caller wants them.
FrameInstances read_results(PostprocessWorkspace& workspace, cudaStream_t stream, std::vector<int>& slots);

// Copies the frame masks of `slots` (from read_results), in order, to dst: host memory (pageable
// or pinned) or device memory alike (unified addressing), count * H * W bytes. Synchronous.
void copy_kept_masks(const PostprocessWorkspace& workspace, const std::vector<int>& slots, void* dst,
                     cudaStream_t stream);

// masks (N, H, W) uint8/bool on the device, out (H, W) int32 C-contiguous on the device.
void instance_map(const TensorView& masks, const TensorView& out, cudaStream_t stream);

// Packs (N, H, W) 0/1 device masks 8 pixels a byte along W, most significant bit first (as
// numpy.packbits(axis=-1)): out (N, H, ceil(W / 8)) uint8 C-contiguous on the device.
void pack_masks(const TensorView& masks, const TensorView& out, cudaStream_t stream);

}  // namespace m2f::cuda

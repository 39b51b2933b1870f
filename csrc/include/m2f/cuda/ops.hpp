// The GPU twins of the CPU core (preprocess.hpp, postprocess.hpp). Same options, same results;
// inputs are TensorViews whose data is in device memory (any byte strides), work is enqueued on a
// caller's stream. Compiled only in CUDA builds.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
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

struct PostprocessWorkspace;

// Re-enqueues a call's crop kernel after read_results grew the crop scratch (see read_results).
using CropRelaunch = std::function<void(PostprocessWorkspace&, cudaStream_t)>;

// Scratch reused from call to call (grown, never shrunk) so steady-state frames allocate nothing.
// Every launch is guarded by counts kept on the device, so a whole call can be captured in a CUDA
// graph: the host learns how many instances there are only at the end (read_results).
//
// Frame masks are computed only inside each kept instance's window (its nonzero box at network
// size, mapped to the frame and widened by the bilinear taps' reach), into `crops`, window after
// window. The kernels find `crops` through `crop_target` (a device-side pointer and capacity), so
// when a frame needs more than the capacity, read_results grows it and re-runs the crop kernel,
// and a graph captured earlier keeps working with the new buffer.
struct PostprocessWorkspace {
  DeviceBuffer order;           // int32: kept candidates, best first
  DeviceBuffer counters;        // int32: [passing candidates, passing instances]
  DeviceBuffer candidate_probs; // float: raw head, class probability of each top-k candidate
  DeviceBuffer candidate_index; // int32: raw head, flat query * C + class of each top-k candidate
  DeviceBuffer probs;           // float: raw head, Q * C softmax scores
  DeviceBuffer sigmoid_sums;    // double
  DeviceBuffer mask_pixels;     // unsigned long long
  DeviceBuffer scores;          // float: raw head, instance score of each top-k candidate
  DeviceBuffer supports;        // per instance: box of the nonzero network-size values
  DeviceBuffer windows;         // per instance: frame window and its offset in crops
  DeviceBuffer crops;           // uint8: the windows' frame masks, back to back
  DeviceBuffer crop_target;     // where the crop kernel writes: crops' address and capacity, bytes needed
  DeviceBuffer stats;           // per instance: area (int64) and bbox (4 x int32)
  DeviceBuffer picked;          // per instance: score (float), label (int64), query (int64)
  DeviceBuffer compact;         // uint8: the kept crops cut to their tight boxes (copy_crops)
  DeviceBuffer compact_jobs;    // per kept instance: what copy_crops moves where
  PinnedBuffer host_stats;      // staging for counters, stats, picked and windows
  PinnedBuffer host_staging;    // staging for crop_target and compact_jobs
  int frame_height = 0, frame_width = 0, limit = 0;
  int kept_counter = 0;  // which counter holds the number of kept instances
  CropRelaunch relaunch_crops;
  std::vector<std::int64_t> kept_slots;  // read_results: slot of each returned instance
};

// Enqueue the deployable path: threshold + stable descending sort of the scores on the device, and
// for the kept ones only, the resize to the frame inside each window, with boxes and areas.
void enqueue_postprocess_deployable(const TensorView& masks, const TensorView& scores, const TensorView& classes,
                                    const ResizeTransform& transform, const SelectionOptions& options,
                                    PostprocessWorkspace& workspace, cudaStream_t stream);

// Enqueue the raw-head path: softmax, top-k over Q*C, fused upsample + sigmoid-sum scoring of the
// top-k queries (no full-size mask is stored for them), selection, then the frame masks of the kept.
void enqueue_postprocess_raw(const TensorView& class_logits, const TensorView& mask_logits,
                             const ResizeTransform& transform, const RawHeadOptions& raw,
                             const SelectionOptions& options, PostprocessWorkspace& workspace, cudaStream_t stream);

// Waits for the stream and returns the kept, non-empty instances' small arrays and crop_offsets
// (FrameInstances::crops stays empty). The inputs of the enqueue call must still be alive: when the
// crops outgrew the scratch, the crop kernel runs again here. Then copy_crops brings the crops.
FrameInstances read_results(PostprocessWorkspace& workspace, cudaStream_t stream);

// Copies the crops of `result` (from read_results), each cut to its box, in order, to dst: host
// memory (pageable or pinned) or device memory alike (unified addressing), result.crop_offsets.back()
// bytes. Synchronous.
void copy_crops(PostprocessWorkspace& workspace, const FrameInstances& result, void* dst, cudaStream_t stream);

// masks (N, H, W) uint8/bool on the device, out (H, W) int32 C-contiguous on the device.
void instance_map(const TensorView& masks, const TensorView& out, cudaStream_t stream);

// Packs (N, H, W) 0/1 device masks 8 pixels a byte along W, most significant bit first (as
// numpy.packbits(axis=-1)): out (N, H, ceil(W / 8)) uint8 C-contiguous on the device.
void pack_masks(const TensorView& masks, const TensorView& out, cudaStream_t stream);

}  // namespace m2f::cuda

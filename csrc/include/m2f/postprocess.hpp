// CPU post-processing: from the model's outputs for one image to instances at the frame's size.
//
// Both paths end the same way: keep scores >= threshold (NaN never passes), sort descending
// (stable), cap at max_instances, bring each kept network-size mask back to the frame (crop the
// transform's content region, cv2 INTER_LINEAR resize to the frame size, > 0.5), drop masks that
// come out empty, and derive boxes and areas from the frame masks.
//
// A frame mask is only computed, and only kept, inside its instance's box: the box of the mask's
// nonzero values at network size, mapped to the frame and widened by the reach of the bilinear
// taps, bounds every pixel that can be set. The result holds each instance's mask cropped to its
// tight box (the same pixels a full-frame resize gives there; every pixel outside is 0), so
// post-processing and result memory grow with the area masks cover, not with N x frame pixels.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "m2f/tensor_view.hpp"
#include "m2f/transform.hpp"

namespace m2f {

struct SelectionOptions {
  float score_threshold = 0.5f;
  int max_instances = 100;
  int threads = 0;  // 0 = one per hardware thread
};

struct RawHeadOptions {
  int no_object_index = 0;  // TAO: 0; detectron2 / Hugging Face: the last column (-1 accepted)
  int topk = 100;           // TAO's test_topk_per_image
};

// A host buffer for output masks, recycled: when the last owner drops it, its (already
// faulted-in) pages go back to a small process-wide pool that the next frame's masks reuse, so a
// streaming loop does not pay the kernel for zeroing fresh pages every frame. Move-only.
class MaskBuffer {
 public:
  MaskBuffer() = default;
  static MaskBuffer allocate(std::size_t bytes);
  MaskBuffer(MaskBuffer&& other) noexcept;
  MaskBuffer& operator=(MaskBuffer&& other) noexcept;
  MaskBuffer(const MaskBuffer&) = delete;
  MaskBuffer& operator=(const MaskBuffer&) = delete;
  ~MaskBuffer();
  std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0, capacity_ = 0;
};

// Instances of one image at the frame's size. Instance i's mask is kept as its crop: the rows
// boxes[4i+1] .. boxes[4i+3] and columns boxes[4i] .. boxes[4i+2] of the frame mask, row-major
// (0/1 bytes), at crops.data() + crop_offsets[i]; crop_offsets has count + 1 entries and
// crop_offsets[count] bytes of crops are used. Owned here so the binding can hand them to numpy
// without a copy.
struct FrameInstances {
  std::int64_t count = 0;
  int height = 0, width = 0;
  MaskBuffer crops;
  std::vector<std::int64_t> crop_offsets{0};
  std::vector<float> scores;               // descending
  std::vector<std::int64_t> labels;        // 0-based model class index
  std::vector<float> boxes;                // count * 4, xyxy, x2 = max column + 1: the crop windows
  std::vector<std::int64_t> areas;         // pixels in each frame mask
  std::vector<std::int64_t> query_indices; // which model output each instance came from
};

// Where instance i's crop sits in the frame, from FrameInstances::boxes (exact integers).
struct CropWindow {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  int width() const { return x1 - x0; }
  int height() const { return y1 - y0; }
};

// Cropped masks as the functions below read them: crops (any bytes, 0/1 read as zero / nonzero)
// with count + 1 offsets and count windows inside a frame of height x width.
struct CropSet {
  const std::uint8_t* crops = nullptr;
  const std::int64_t* offsets = nullptr;
  const CropWindow* windows = nullptr;
  std::int64_t count = 0;
  int height = 0, width = 0;
};

// Checks that every window lies in the frame and every crop has window-area bytes within `bytes`.
void check_crops(const CropSet& crops, std::int64_t bytes);

// Deployable contract (post-processing inside the graph). masks (K, net_h, net_w) float32,
// float16, uint8 or bool; scores (K,) float32 or float16; classes (K,) int32 or int64.
// Any strides. Only kept instances' pixels are read beyond the scores.
FrameInstances postprocess_deployable(const TensorView& masks, const TensorView& scores, const TensorView& classes,
                                      const ResizeTransform& transform, const SelectionOptions& options);

// Raw-head contract: class_logits (Q, C+1) and mask_logits (Q, h, w), float32 or float16, any
// strides. TAO's instance inference at network size, then the common selection and mapping.
FrameInstances postprocess_raw(const TensorView& class_logits, const TensorView& mask_logits,
                               const ResizeTransform& transform, const RawHeadOptions& raw,
                               const SelectionOptions& options);

// out (H, W) int32 C-contiguous: 0 = background, i + 1 = instance i; lower index wins.
void instance_map(const TensorView& masks, const TensorView& out, int threads);
void instance_map(const CropSet& crops, const TensorView& out, int threads);

// Full masks from crops: out (N, H, W) uint8 C-contiguous, zeros outside each window.
void expand_crops(const CropSet& crops, const TensorView& out, int threads);

// COCO RLE `counts` strings (pycocotools' compressed form) of masks (N, H, W), any strides.
std::vector<std::string> rle_encode(const TensorView& masks, int threads);
// The same strings for the full-frame masks that the crops stand for, without building them.
std::vector<std::string> rle_encode(const CropSet& crops, int threads);

}  // namespace m2f

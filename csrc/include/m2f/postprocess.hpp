// CPU post-processing: from the model's outputs for one image to instances at the frame's size.
//
// Both paths end the same way: keep scores >= threshold (NaN never passes), sort descending
// (stable), cap at max_instances, bring each kept network-size mask back to the frame (crop the
// transform's content region, cv2 INTER_LINEAR resize to the frame size, > 0.5), drop masks that
// come out empty, and derive boxes and areas from the frame masks.
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

// Instances of one image at the frame's size. masks holds count * height * width bytes (0/1),
// C-contiguous, owned here so the binding can hand it to numpy without a copy.
struct FrameInstances {
  std::int64_t count = 0;
  int height = 0, width = 0;
  MaskBuffer masks;
  std::vector<float> scores;               // descending
  std::vector<std::int64_t> labels;        // 0-based model class index
  std::vector<float> boxes;                // count * 4, xyxy, x2 = max column + 1
  std::vector<std::int64_t> areas;         // pixels in each frame mask
  std::vector<std::int64_t> query_indices; // which model output each instance came from
};

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

// COCO RLE `counts` strings (pycocotools' compressed form) of masks (N, H, W), any strides.
std::vector<std::string> rle_encode(const TensorView& masks, int threads);

}  // namespace m2f

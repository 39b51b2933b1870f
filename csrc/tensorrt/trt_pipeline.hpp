// Frame(s) on the GPU -> preprocess -> TensorRT -> post-process, every intermediate on the device.
// With static shapes the three stages are captured into one CUDA graph on the second call with the
// same frames (pointers, shapes, strides) and stream, and replayed afterwards; where capture fails
// (a plugin that synchronises, an old driver) the pipeline runs eagerly from then on.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "m2f/cuda/buffers.hpp"
#include "m2f/cuda/ops.hpp"
#include "tensorrt/trt_runner.hpp"

namespace m2f::trt {

struct PipelineOptions {
  bool raw_head = false;             // contract: false = deployable, true = raw head
  std::string input;                 // engine tensor names
  std::string masks, scores, classes;        // deployable outputs
  std::string class_logits, mask_logits;     // raw-head outputs
  PreprocessOptions preprocess;
  SelectionOptions selection;
  RawHeadOptions raw;
  bool use_cuda_graph = true;
};

class Pipeline {
 public:
  Pipeline(Runner& runner, PipelineOptions options);
  // Enqueues (or replays) everything for `frames` ((H, W, C) uint8 device views) on `stream`. The
  // results are then read per frame from workspace(b) (cuda::read_results / copy_kept_masks).
  std::vector<ResizeTransform> run(const std::vector<TensorView>& frames, cudaStream_t stream);
  cuda::PostprocessWorkspace& workspace(std::size_t b) { return workspaces_.at(b); }
  bool graph_active() const noexcept { return static_cast<bool>(graph_exec_); }

 private:
  void bind(std::int64_t batch);
  void enqueue_all(const std::vector<TensorView>& frames, const std::vector<ResizeTransform>& transforms,
                   cudaStream_t stream);
  TensorView output_item(const std::string& name, std::int64_t b) const;

  Runner& runner_;
  PipelineOptions options_;
  std::int64_t net_height_ = 0, net_width_ = 0, bound_batch_ = -1;
  cuda::DeviceBuffer input_;
  struct Output {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;  // for the bound batch
    cuda::DeviceBuffer buffer;
  };
  std::vector<Output> outputs_;
  std::vector<cuda::PostprocessWorkspace> workspaces_;
  std::vector<std::int64_t> last_key_, graph_key_;
  bool graph_failed_ = false;
  cuda::CudaGraph graph_;
  cuda::GraphExec graph_exec_;
};

}  // namespace m2f::trt

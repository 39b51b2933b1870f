// Frame(s) on the GPU -> preprocess -> TensorRT -> post-process, every intermediate on the device.
// With static shapes the three stages are captured into one CUDA graph on the second call with the
// same frames (pointers, shapes, strides), stream, settings and runner plan generation, and replayed
// afterwards; where capture fails (a plugin that synchronises, an old driver) the pipeline runs
// eagerly from then on.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "m2f/cuda/buffers.hpp"
#include "m2f/cuda/ops.hpp"
#include "tensorrt/trt_runner.hpp"

namespace m2f::trt {

// What a user may change on a built pipeline (Pipeline::update); the next run() uses it.
struct PipelineSettings {
  PreprocessOptions preprocess;
  SelectionOptions selection;
  RawHeadOptions raw;  // raw head only; no_object_index may be negative (counted from the last column)
};

struct PipelineOptions {
  bool raw_head = false;             // contract: false = deployable, true = raw head
  std::string input;                 // engine tensor names
  std::string masks, scores, classes;        // deployable outputs
  std::string class_logits, mask_logits;     // raw-head outputs
  PipelineSettings settings;
  bool use_cuda_graph = true;
};

// Host and GPU times of the last Pipeline::run(), from timing events on its stream, read without
// waiting. Stage times exist for eager runs only: a replayed CUDA graph is one launch, timed as a whole.
struct PipelineTimings {
  bool valid = false;
  bool replayed_graph = false;
  double enqueue_ms = 0;  // host time to enqueue (or launch) the three stages
  bool gpu_done = false;  // the GPU has finished the run: the times below are set
  float gpu_ms = 0.f;     // preprocess + inference + post-processing
  bool stages = false;    // the three below are set
  float preprocess_ms = 0.f, infer_ms = 0.f, postprocess_ms = 0.f;
};

class Pipeline {
 public:
  Pipeline(Runner& runner, PipelineOptions options);
  // Enqueues (or replays) everything for `frames` ((H, W, C) uint8 device views) on `stream`. The
  // results are then read per frame from workspace(b) (cuda::read_results / copy_crops).
  std::vector<ResizeTransform> run(const std::vector<TensorView>& frames, cudaStream_t stream);
  cuda::PostprocessWorkspace& workspace(std::size_t b) { return workspaces_.at(b); }
  bool graph_active() const noexcept { return static_cast<bool>(graph_exec_); }
  int device() const noexcept { return runner_.device(); }
  PipelineTimings last_timings() const;
  // Checks and takes new settings (std::invalid_argument naming the setting that is wrong; nothing
  // changes then). A captured graph holds the old settings in its kernels' arguments: it is dropped,
  // and the next run() is eager (it may also grow buffers: a larger max_instances).
  void update(const PipelineSettings& settings);
  const PipelineSettings& settings() const noexcept { return options_.settings; }

 private:
  PipelineSettings checked(PipelineSettings settings) const;
  void bind(std::int64_t batch);
  // record_stages: record the stage events between the stages (eager runs; never inside a capture).
  void enqueue_all(const std::vector<TensorView>& frames, const std::vector<ResizeTransform>& transforms,
                   cudaStream_t stream, bool record_stages);
  void drop_graph();
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
  // Timing events: start, after preprocess, after inference, end. Recorded outside any captured graph.
  cuda::Event started_, preprocessed_, inferred_, finished_;
  bool timed_ = false, timed_stages_ = false, timed_replay_ = false;
  double enqueue_ms_ = 0;
};

}  // namespace m2f::trt

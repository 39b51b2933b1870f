#include "tensorrt/trt_pipeline.hpp"

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "m2f/cuda/check.hpp"

namespace m2f::trt {

Pipeline::Pipeline(Runner& runner, PipelineOptions options) : runner_(runner), options_(std::move(options)) {
  const TensorInfo& input = runner_.tensor(options_.input);
  if (!input.is_input || input.shape.size() != 4 || input.shape[1] != 3 || input.shape[2] <= 0 || input.shape[3] <= 0)
    throw std::invalid_argument("pipeline: input '" + options_.input + "' must be a (B, 3, H, W) input with fixed H, W");
  if (input.dtype != DType::float32 && input.dtype != DType::float16)
    throw std::invalid_argument("pipeline: input '" + options_.input + "' must be float32 or float16");
  net_height_ = input.shape[2];
  net_width_ = input.shape[3];
  const std::vector<std::string> names = options_.raw_head
                                             ? std::vector<std::string>{options_.class_logits, options_.mask_logits}
                                             : std::vector<std::string>{options_.masks, options_.scores, options_.classes};
  for (const auto& t : runner_.tensors())
    if (!t.is_input) outputs_.push_back(Output{t.name, t.dtype, {}, cuda::DeviceBuffer()});
  for (const auto& n : names) runner_.tensor(n);  // throws, naming the tensors the engine has
  options_.settings = checked(options_.settings);
  started_ = cuda::Event::create(true);
  preprocessed_ = cuda::Event::create(true);
  inferred_ = cuda::Event::create(true);
  finished_ = cuda::Event::create(true);
}

PipelineSettings Pipeline::checked(PipelineSettings s) const {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(s.preprocess.mean[c])) fail("mean: expected finite numbers");
    if (!std::isfinite(s.preprocess.stddev[c]) || s.preprocess.stddev[c] == 0.f)
      fail("std: expected finite, nonzero numbers");
  }
  if (std::isnan(s.selection.score_threshold)) fail("score_threshold: expected a number, got NaN");
  if (s.selection.max_instances < 0)
    fail("max_instances: expected >= 0, got " + std::to_string(s.selection.max_instances));
  if (options_.raw_head) {
    if (s.raw.topk < 1) fail("topk: expected >= 1, got " + std::to_string(s.raw.topk));
    const std::vector<std::int64_t>& logits = runner_.tensor(options_.class_logits).shape;
    const std::int64_t columns = logits.empty() ? -1 : logits.back();
    if (columns > 0) {
      if (s.raw.no_object_index < -columns || s.raw.no_object_index >= columns)
        fail("no_object_index: expected 0 (TAO) or -1 / " + std::to_string(columns - 1) + " (last column) for " +
             std::to_string(columns) + " columns, got " + std::to_string(s.raw.no_object_index));
      if (s.raw.no_object_index < 0) s.raw.no_object_index += static_cast<int>(columns);
    }
  }
  return s;
}

void Pipeline::update(const PipelineSettings& settings) {
  options_.settings = checked(settings);
  drop_graph();
  last_key_.clear();
}

void Pipeline::drop_graph() {
  graph_exec_ = cuda::GraphExec();
  graph_ = cuda::CudaGraph();
  graph_key_.clear();
}

// Shapes and addresses for a batch size; buffers grow to the largest batch seen and then stay put,
// so that a captured graph keeps pointing at them. The context's shapes and addresses are set on
// every call: the engine's other users (Engine.infer) may have pointed it elsewhere.
void Pipeline::bind(std::int64_t batch) {
  const std::size_t item = dtype_size(runner_.tensor(options_.input).dtype);
  runner_.set_input_shape(options_.input, {batch, 3, net_height_, net_width_});
  if (batch != bound_batch_) {
    // Buffers may move: a graph captured for another batch must never be replayed.
    drop_graph();
    last_key_.clear();
    input_.ensure(static_cast<std::size_t>(batch * 3 * net_height_ * net_width_) * item);
    for (auto& o : outputs_) {
      o.shape = runner_.output_shape(o.name);
      std::int64_t elements = 1;
      for (auto d : o.shape) elements *= d < 0 ? 0 : d;
      o.buffer.ensure(static_cast<std::size_t>(elements) * dtype_size(o.dtype) + 1);
    }
    if (workspaces_.size() < static_cast<std::size_t>(batch)) workspaces_.resize(static_cast<std::size_t>(batch));
    bound_batch_ = batch;
  }
  runner_.set_tensor_address(options_.input, input_.data());
  for (auto& o : outputs_) runner_.set_tensor_address(o.name, o.buffer.data());
}

TensorView Pipeline::output_item(const std::string& name, std::int64_t b) const {
  for (const auto& o : outputs_) {
    if (o.name != name) continue;
    TensorView v;
    v.dtype = o.dtype;
    v.device = Device::cuda;
    v.ndim = static_cast<int>(o.shape.size()) - 1;
    std::int64_t stride = static_cast<std::int64_t>(dtype_size(o.dtype));
    for (int d = v.ndim - 1; d >= 0; --d) {
      v.shape[d] = o.shape[static_cast<std::size_t>(d + 1)];
      v.strides[d] = stride;
      stride *= v.shape[d];
    }
    v.data = static_cast<char*>(o.buffer.data()) + b * stride;
    return v;
  }
  throw std::invalid_argument("pipeline: no output '" + name + "'");
}

void Pipeline::enqueue_all(const std::vector<TensorView>& frames, const std::vector<ResizeTransform>& transforms,
                           cudaStream_t stream, bool record_stages) {
  const auto batch = static_cast<std::int64_t>(frames.size());
  const DType input_dtype = runner_.tensor(options_.input).dtype;
  TensorView tensor = make_view(input_.data(), input_dtype, {batch, 3, net_height_, net_width_}, Device::cuda);
  cuda::preprocess(frames, tensor, options_.settings.preprocess, stream);
  if (record_stages) preprocessed_.record(stream);
  runner_.enqueue_eager(stream);
  if (record_stages) inferred_.record(stream);
  for (std::int64_t b = 0; b < batch; ++b) {
    auto& w = workspaces_[static_cast<std::size_t>(b)];
    const ResizeTransform& t = transforms[static_cast<std::size_t>(b)];
    if (options_.raw_head)
      cuda::enqueue_postprocess_raw(output_item(options_.class_logits, b), output_item(options_.mask_logits, b), t,
                                    options_.settings.raw, options_.settings.selection, w, stream);
    else
      cuda::enqueue_postprocess_deployable(output_item(options_.masks, b), output_item(options_.scores, b),
                                           output_item(options_.classes, b), t, options_.settings.selection, w, stream);
  }
}

std::vector<ResizeTransform> Pipeline::run(const std::vector<TensorView>& frames, cudaStream_t stream) {
  if (frames.empty()) throw std::invalid_argument("frames: at least one frame");
  std::vector<ResizeTransform> transforms;
  std::vector<std::int64_t> key{static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(stream))};
  for (const auto& f : frames) {
    if (f.ndim != 3) throw std::invalid_argument("frames: expected (H, W, C) frames");
    transforms.push_back(make_transform(options_.settings.preprocess.resize, static_cast<int>(f.shape[0]),
                                        static_cast<int>(f.shape[1]), static_cast<int>(net_height_),
                                        static_cast<int>(net_width_)));
    key.push_back(static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(f.data)));
    for (int d = 0; d < 3; ++d) {
      key.push_back(f.shape[d]);
      key.push_back(f.strides[d]);
    }
  }
  DeviceScope on_device(runner_.device());
  timed_ = false;
  bind(static_cast<std::int64_t>(frames.size()));
  // The runner's plan generation is part of the key: after any re-plan (ours, or another user of the
  // engine going X -> Y -> X), a graph captured before is never replayed, and the next run is eager.
  key.push_back(static_cast<std::int64_t>(runner_.plan_generation()));

  // Host time covers everything run() enqueues (a capture included); the GPU start event is recorded
  // right before the work, so a capture's host time is not counted as GPU time.
  const auto host_start = std::chrono::steady_clock::now();
  auto finish = [&](bool stages, bool replayed) {
    finished_.record(stream);
    enqueue_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_start).count();
    timed_stages_ = stages;
    timed_replay_ = replayed;
    timed_ = true;
  };
  auto replay_graph = [&] {
    started_.record(stream);
    graph_exec_.launch(stream);
    finish(false, true);
    return transforms;
  };
  auto run_eagerly = [&] {
    started_.record(stream);
    enqueue_all(frames, transforms, stream, true);
    finish(true, false);
    return transforms;
  };

  if (graph_exec_ && key == graph_key_) return replay_graph();
  // The legacy default stream cannot be captured; the first call with new frames sizes every buffer
  // (nothing may be allocated during capture) and lets TensorRT settle on its kernels.
  const bool capture = options_.use_cuda_graph && !graph_failed_ && stream != nullptr && key == last_key_ &&
                       runner_.plan_settled();
  last_key_ = key;
  if (!capture) return run_eagerly();
  drop_graph();
  // As trtexec: the warm-up's work finishes before the capture begins.
  M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
  graph_ = cuda::capture_graph(stream, [&] { enqueue_all(frames, transforms, stream, false); });
  if (graph_) {
    try {
      graph_exec_ = graph_.instantiate();
      graph_key_ = key;
    } catch (const CudaError&) {
      graph_exec_ = cuda::GraphExec();
    }
  }
  if (!graph_exec_) {
    graph_failed_ = true;
    graph_ = cuda::CudaGraph();
    runner_.take_log();
    return run_eagerly();
  }
  return replay_graph();
}

PipelineTimings Pipeline::last_timings() const {
  PipelineTimings t;
  if (!timed_) return t;
  t.valid = true;
  t.replayed_graph = timed_replay_;
  t.enqueue_ms = enqueue_ms_;
  if (!finished_.done()) return t;
  t.gpu_done = true;
  t.gpu_ms = cuda::Event::elapsed_ms(started_, finished_);
  if (timed_stages_) {
    t.stages = true;
    t.preprocess_ms = cuda::Event::elapsed_ms(started_, preprocessed_);
    t.infer_ms = cuda::Event::elapsed_ms(preprocessed_, inferred_);
    t.postprocess_ms = cuda::Event::elapsed_ms(inferred_, finished_);
  }
  return t;
}

}  // namespace m2f::trt

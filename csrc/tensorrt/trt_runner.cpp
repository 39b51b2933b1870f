#include "trt_runner.hpp"

#include <NvInfer.h>
#include <NvInferPlugin.h>
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <sstream>

#include "m2f/cuda/buffers.hpp"
#include "m2f/cuda/check.hpp"

namespace m2f::trt {
namespace {

// The latest warnings and errors one runner saw, so an exception can carry TensorRT's own
// explanation (the error that matters comes last, after any number of warnings).
class LogLines {
 public:
  void add(nvinfer1::ILogger::Severity severity, const char* message) noexcept {
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      lines_.push_back((severity <= nvinfer1::ILogger::Severity::kERROR ? "error: " : "warning: ") + std::string(message));
      if (lines_.size() > 64) lines_.pop_front();
    } catch (...) {
    }
  }
  std::string take() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string all;
    for (const auto& l : lines_) all += (all.empty() ? "" : "\n") + l;
    lines_.clear();
    return all;
  }

 private:
  std::mutex mutex_;
  std::deque<std::string> lines_;
};

// The runner calling TensorRT on this thread (LogScope): its messages go to that runner's lines.
thread_local LogLines* current_lines = nullptr;

// TensorRT keeps the loggers it is given: the plugin library for the life of the process (it stores
// the pointer of every init call in a global), a runtime until everything it created is gone. So
// there is one logger for every runtime and the plugin library, never destroyed, and each runner
// captures its own messages inside it; messages logged while no runner is calling (plugins, work
// run later) are kept for whoever asks next (Runner::take_log).
class ProcessLogger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* message) noexcept override {
    if (severity > Severity::kWARNING) return;
    (current_lines ? *current_lines : unattributed).add(severity, message);
  }
  LogLines unattributed;
};

ProcessLogger& process_logger() {
  static ProcessLogger* logger = new ProcessLogger();  // never destroyed: plugins may log at exit
  return *logger;
}

class LogScope {
 public:
  explicit LogScope(LogLines& lines) noexcept : previous_(current_lines) { current_lines = &lines; }
  ~LogScope() { current_lines = previous_; }
  LogScope(const LogScope&) = delete;
  LogScope& operator=(const LogScope&) = delete;

 private:
  LogLines* previous_;
};

// TensorRT objects are released with delete from 8.0 on (destroy() is gone in 10).
struct Deleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    delete p;
  }
};
template <typename T>
using Owned = std::unique_ptr<T, Deleter>;

std::string version_string(std::int32_t v) {
  // 8.x encodes major*1000 + minor*100 + patch, 10.x and later major*10000 + minor*100 + patch.
  int major = v >= 100000 ? v / 10000 : v / 1000;
  int minor = (v / 100) % (v >= 100000 ? 100 : 10);
  int patch = v % 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

bool to_dtype(nvinfer1::DataType t, DType* out, std::string* name) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: *name = "float32"; *out = DType::float32; return true;
    case nvinfer1::DataType::kHALF: *name = "float16"; *out = DType::float16; return true;
    case nvinfer1::DataType::kINT32: *name = "int32"; *out = DType::int32; return true;
    case nvinfer1::DataType::kBOOL: *name = "bool"; *out = DType::boolean; return true;
    case nvinfer1::DataType::kUINT8: *name = "uint8"; *out = DType::uint8; return true;
    case nvinfer1::DataType::kINT8: *name = "int8"; return false;
#if NV_TENSORRT_MAJOR >= 10
    case nvinfer1::DataType::kINT64: *name = "int64"; *out = DType::int64; return true;
#endif
    default: *name = "unsupported"; return false;
  }
}

std::vector<std::int64_t> to_vector(const nvinfer1::Dims& d) {
  std::vector<std::int64_t> v;
  for (int i = 0; i < d.nbDims; ++i) v.push_back(static_cast<std::int64_t>(d.d[i]));
  return v;
}

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::ostringstream o;
  o << "(";
  for (std::size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ")";
  return o.str();
}

std::once_flag plugins_once;
bool plugins_ok = false;

std::size_t engine_device_memory(const nvinfer1::ICudaEngine& engine) {
#if NV_TENSORRT_MAJOR > 10 || (NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR >= 1)
  // getDeviceMemorySize() is deprecated from 10.1 and gone in 11.
  return static_cast<std::size_t>(engine.getDeviceMemorySizeV2());
#else
  return engine.getDeviceMemorySize();
#endif
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The first line of a failed deserialization, chosen from what TensorRT logged.
std::string deserialize_failure(const std::string& log) {
  const std::string l = lower(log);
  if (l.find("plugin") != std::string::npos)
    return "could not load the TensorRT engine: a plugin it needs is missing (the deployable Mask2Former needs "
           "MultiscaleDeformableAttnPlugin_TRT from libnvinfer_plugin of this TensorRT).";
  if (l.find("out of memory") != std::string::npos || l.find("outofmemory") != std::string::npos ||
      l.find("allocation failed") != std::string::npos)
    return "could not load the TensorRT engine: not enough GPU memory.";
  if (l.find("version") != std::string::npos || l.find("magic") != std::string::npos ||
      l.find("serializ") != std::string::npos || l.find("compute capability") != std::string::npos ||
      l.find("device") != std::string::npos)
    return "could not load the TensorRT engine: it was built with another TensorRT version or for another GPU "
           "(TensorRT " + runtime_version() + " is loaded here). Rebuild it on this machine: m2f-edge build MODEL.onnx";
  return "could not load the TensorRT engine (TensorRT " + runtime_version() +
         " loaded). An engine only runs with the TensorRT version and the GPU model it was built with; rebuild it "
         "on this machine (m2f-edge build MODEL.onnx). A missing plugin or too little GPU memory are the other "
         "usual reasons.";
}

constexpr std::uintptr_t kTensorAlignment = 256;  // "The pointer must have at least 256-byte alignment."

}  // namespace

struct Runner::Impl {
  LogLines log;
  Owned<nvinfer1::IRuntime> runtime;
  Owned<nvinfer1::ICudaEngine> engine;
  Owned<nvinfer1::IExecutionContext> context;
  // What the current graph was captured for: every tensor's address and shape, and the stream.
  std::vector<std::pair<void*, std::vector<std::int64_t>>> bound;
  std::vector<std::pair<void*, std::vector<std::int64_t>>> graph_bound;
  cudaStream_t graph_stream = nullptr;
  int eager_runs_with_bound = 0;
  bool graph_failed = false;
  std::uint64_t graph_generation = 0;  // the runner's plan generation the graph was captured at
  cuda::CudaGraph graph;
  cuda::GraphExec graph_exec;
  // Around each enqueue(): recorded on the caller's stream, read without waiting.
  cuda::Event timing_start, timing_end;
  bool timed = false;
  double enqueue_ms = 0;
  // The shape this runner last gave each dynamic input with setInputShape (none before the first).
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> shapes_set;

  std::vector<std::int64_t>* shape_set_for(const std::string& name) {
    for (auto& s : shapes_set)
      if (s.first == name) return &s.second;
    return nullptr;
  }

  // This runner's lines after those nobody's call caused (the plugin library's come there).
  std::string take_log() {
    std::string unattributed = process_logger().unattributed.take();
    std::string own = log.take();
    return unattributed.empty() ? own : unattributed + (own.empty() ? "" : "\n" + own);
  }

  [[noreturn]] void fail(const std::string& what) {
    std::string lines = take_log();
    throw TensorRTError(what + (lines.empty() ? "" : "\nTensorRT said:\n" + lines));
  }
};

DeviceScope::DeviceScope(int device) {
  M2F_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) M2F_CUDA_CHECK(cudaSetDevice(device));
}

DeviceScope::~DeviceScope() {
  int current = -1;
  release_quietly([&] {
    M2F_CUDA_CHECK(cudaGetDevice(&current));
    if (current != previous_) M2F_CUDA_CHECK(cudaSetDevice(previous_));
  });
}

Runner::Runner(const void* engine, std::size_t size, int dla_core, int device)
    : impl_(std::make_unique<Impl>()), device_(device) {
  DeviceScope on_device(device);
  LogScope logging(impl_->log);
  // The deployable ONNX holds MultiscaleDeformableAttnPlugin_TRT, which lives in the stock plugin
  // library: register it before deserializing or the engine will not load. TensorRT takes the
  // logger as void* and casts it back to ILogger*: it must be passed as exactly that pointer.
  std::call_once(plugins_once, [] {
    plugins_ok = initLibNvInferPlugins(static_cast<nvinfer1::ILogger*>(&process_logger()), "");
  });
  if (!plugins_ok) impl_->fail("could not initialise TensorRT's plugin library (libnvinfer_plugin)");

  impl_->runtime.reset(nvinfer1::createInferRuntime(process_logger()));
  if (!impl_->runtime) impl_->fail("could not create the TensorRT runtime");
  if (dla_core >= 0) {
    if (dla_core >= impl_->runtime->getNbDLACores())
      impl_->fail("dla_core " + std::to_string(dla_core) + " requested but this device has " +
                  std::to_string(impl_->runtime->getNbDLACores()) + " DLA cores");
    impl_->runtime->setDLACore(dla_core);
  }
  impl_->engine.reset(impl_->runtime->deserializeCudaEngine(engine, size));
  if (!impl_->engine) {
    const std::string log = impl_->take_log();
    throw TensorRTError(deserialize_failure(log) + (log.empty() ? "" : "\nTensorRT said:\n" + log));
  }
  impl_->context.reset(impl_->engine->createExecutionContext());
  if (!impl_->context)
    impl_->fail("could not create a TensorRT execution context (often: not enough GPU memory for " +
                std::to_string(engine_device_memory(*impl_->engine) >> 20) + " MiB of activations)");

  const int count = impl_->engine->getNbIOTensors();
  for (int i = 0; i < count; ++i) {
    TensorInfo info;
    info.name = impl_->engine->getIOTensorName(i);
    const char* name = info.name.c_str();
    info.is_input = impl_->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
    if (!to_dtype(impl_->engine->getTensorDataType(name), &info.dtype, &info.trt_dtype))
      impl_->fail("tensor '" + info.name + "' has TensorRT type " + info.trt_dtype + ", which m2f_edge cannot feed");
    info.shape = to_vector(impl_->engine->getTensorShape(name));
    if (info.is_input && impl_->engine->getNbOptimizationProfiles() > 0) {
      info.min_shape = to_vector(impl_->engine->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN));
      info.opt_shape = to_vector(impl_->engine->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kOPT));
      info.max_shape = to_vector(impl_->engine->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX));
    }
    tensors_.push_back(std::move(info));
  }
  impl_->timing_start = cuda::Event::create(true);
  impl_->timing_end = cuda::Event::create(true);
}

// TensorRT's objects and the graphs are released on the device they were made on.
Runner::~Runner() {
  try {
    DeviceScope on_device(device_);
    impl_.reset();
  } catch (...) {
    impl_.reset();
  }
}

const TensorInfo& Runner::tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  std::string names;
  for (const auto& t : tensors_) names += (names.empty() ? "" : ", ") + t.name;
  throw std::invalid_argument("the engine has no tensor '" + name + "' (it has: " + names + ")");
}

std::size_t Runner::device_memory_size() const { return engine_device_memory(*impl_->engine); }

void Runner::set_input_shape(const std::string& name, const std::vector<std::int64_t>& shape) {
  const TensorInfo* info = &tensor(name);
  if (!info->is_input) throw std::invalid_argument("'" + name + "' is an output of the engine, not an input");
  bool dynamic = false;
  for (auto d : info->shape) dynamic = dynamic || d < 0;
  if (!dynamic && shape != info->shape)
    throw std::invalid_argument("input '" + name + "': the engine takes shape " + shape_text(info->shape) + ", got " +
                                shape_text(shape));
  // An input with an optimisation profile needs setInputShape even where the profile pins every
  // dimension (MIN == MAX: the engine may then report a static shape); without a profile, a static
  // input has nothing to tell TensorRT.
  if (!dynamic && info->min_shape.empty()) return;
  if (!info->min_shape.empty()) {
    bool fits = shape.size() == info->min_shape.size();
    for (std::size_t i = 0; fits && i < shape.size(); ++i)
      fits = shape[i] >= info->min_shape[i] && shape[i] <= info->max_shape[i];
    if (!fits)
      throw std::invalid_argument("input '" + name + "': shape " + shape_text(shape) +
                                  " is outside the engine's optimisation profile " + shape_text(info->min_shape) +
                                  " .. " + shape_text(info->max_shape) +
                                  " (rebuild the engine with a wider --batch MIN:OPT:MAX)");
  }
  // Unchanged since this runner set it: nothing to re-plan. The context's own report alone is not
  // enough: getTensorShape answers a dimension the profile pins (MIN == MAX) before setInputShape
  // was ever called, and TensorRT still wants that call.
  std::vector<std::int64_t>* previous = impl_->shape_set_for(name);
  if (previous && *previous == shape && to_vector(impl_->context->getTensorShape(name.c_str())) == shape) return;
  nvinfer1::Dims dims{};
  dims.nbDims = static_cast<int>(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) dims.d[i] = static_cast<decltype(dims.d[0] + 0)>(shape[i]);
  LogScope logging(impl_->log);
  if (!impl_->context->setInputShape(name.c_str(), dims))
    impl_->fail("TensorRT refused shape " + shape_text(shape) + " for input '" + name + "'");
  if (previous)
    *previous = shape;
  else
    impl_->shapes_set.emplace_back(name, shape);
  ++plan_generation_;  // TensorRT re-plans on the next enqueue, which therefore must not be captured
}

std::vector<std::int64_t> Runner::output_shape(const std::string& name) const {
  tensor(name);
  std::vector<std::int64_t> shape = to_vector(impl_->context->getTensorShape(name.c_str()));
  for (auto d : shape)
    if (d < 0)
      throw TensorRTError("output '" + name + "' has shape " + shape_text(shape) +
                          ": a size that depends on the data (or an input shape not set yet); m2f_edge runs "
                          "engines whose output shapes follow from the input shapes");
  return shape;
}

void Runner::set_tensor_address(const std::string& name, void* device_pointer) {
  if (reinterpret_cast<std::uintptr_t>(device_pointer) % kTensorAlignment != 0)
    throw std::invalid_argument("tensor '" + name + "': TensorRT needs device addresses aligned to " +
                                std::to_string(kTensorAlignment) +
                                " bytes; this array starts inside an allocation (a view with an offset?): pass a "
                                "contiguous copy");
  LogScope logging(impl_->log);
  if (!impl_->context->setTensorAddress(name.c_str(), device_pointer))
    impl_->fail("TensorRT refused the address for tensor '" + name + "'");
}

// allInputDimensionsSpecified() is documented (8.5 to 11) not to work with setInputShape(), the
// name-based call used here: the runner keeps its own record of which dynamic inputs were given.
void Runner::require_input_shapes() const {
  std::string missing;
  for (const auto& t : tensors_) {
    if (!t.is_input) continue;
    bool dynamic = !t.min_shape.empty();  // a profile: TensorRT wants the shape however pinned
    for (auto d : t.shape) dynamic = dynamic || d < 0;
    if (dynamic && !impl_->shape_set_for(t.name)) missing += (missing.empty() ? "'" : ", '") + t.name + "'";
  }
  if (!missing.empty()) impl_->fail("not every input shape was set before enqueue (no shape for " + missing + ")");
}

void Runner::run_enqueue_v3(cudaStream_t stream) {
  LogScope logging(impl_->log);
  if (!impl_->context->enqueueV3(stream)) impl_->fail("TensorRT enqueueV3 failed");
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  M2F_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture == cudaStreamCaptureStatusNone) eager_generation_ = plan_generation_;
}

void Runner::enqueue(cudaStream_t stream) {
  Impl& im = *impl_;
  DeviceScope on_device(device_);
  require_input_shapes();
  im.timed = false;
  const auto host_start = std::chrono::steady_clock::now();
  enqueue_or_replay(stream);
  const auto host_end = std::chrono::steady_clock::now();
  im.timing_end.record(stream);
  im.enqueue_ms = std::chrono::duration<double, std::milli>(host_end - host_start).count();
  im.timed = true;
}

EnqueueTimings Runner::last_timings() const {
  const Impl& im = *impl_;
  EnqueueTimings t;
  if (!im.timed) return t;
  t.valid = true;
  t.enqueue_ms = im.enqueue_ms;
  if (im.timing_end.done()) {
    t.gpu_ms = cuda::Event::elapsed_ms(im.timing_start, im.timing_end);
    t.gpu_done = true;
  }
  return t;
}

void Runner::enqueue_or_replay(cudaStream_t stream) {
  Impl& im = *impl_;
  // The GPU start event goes right before the work, so that a capture's host time is not GPU time.
  if (!use_graph_ || im.graph_failed || stream == nullptr) {  // the legacy stream cannot be captured
    im.timing_start.record(stream);
    run_enqueue_v3(stream);
    return;
  }
  im.bound.clear();
  for (const auto& t : tensors_)
    im.bound.emplace_back(const_cast<void*>(im.context->getTensorAddress(t.name.c_str())),
                          to_vector(im.context->getTensorShape(t.name.c_str())));
  // A graph replays only at the plan generation it was captured at: after a re-plan (even one that
  // came back to the same shapes) it may point at memory TensorRT has freed.
  const bool same_call =
      im.bound == im.graph_bound && stream == im.graph_stream && im.graph_generation == plan_generation_;
  if (im.graph_exec && same_call) {
    im.timing_start.record(stream);
    im.graph_exec.launch(stream);
    return;
  }
  if (!same_call) {
    im.graph_exec = cuda::GraphExec();
    im.graph = cuda::CudaGraph();
    im.graph_bound = im.bound;
    im.graph_stream = stream;
    im.graph_generation = plan_generation_;
    im.eager_runs_with_bound = 0;
  }
  // The first call with new shapes or buffers runs eagerly, the next one with the same is captured:
  // TensorRT allocates and re-plans on the first enqueue after a shape change (the 8.5/8.6 headers say
  // this breaks stream capture), and buffers that change on every call are cheaper eager than re-captured.
  if (im.eager_runs_with_bound == 0 || !plan_settled()) {
    ++im.eager_runs_with_bound;
    im.timing_start.record(stream);
    run_enqueue_v3(stream);
    return;
  }
  // As trtexec: the warm-up's work finishes before the capture begins.
  M2F_CUDA_CHECK(cudaStreamSynchronize(stream));
  bool enqueued = true;
  {
    LogScope logging(im.log);
    im.graph = cuda::capture_graph(stream, [&] { enqueued = im.context->enqueueV3(stream); });
  }
  if (im.graph && enqueued) {
    try {
      im.graph_exec = im.graph.instantiate();
    } catch (const CudaError&) {
      im.graph_exec = cuda::GraphExec();
    }
  }
  if (!im.graph_exec) {
    im.graph_failed = true;  // e.g. a plugin that synchronises: stay eager from now on
    im.graph = cuda::CudaGraph();
    im.log.take();
    im.timing_start.record(stream);
    run_enqueue_v3(stream);
    return;
  }
  im.timing_start.record(stream);
  im.graph_exec.launch(stream);
}

void Runner::enqueue_eager(cudaStream_t stream) {
  DeviceScope on_device(device_);
  require_input_shapes();
  run_enqueue_v3(stream);
}

bool Runner::graph_active() const noexcept { return static_cast<bool>(impl_->graph_exec); }

std::string Runner::take_log() { return impl_->take_log(); }

std::string runtime_version() { return version_string(getInferLibVersion()); }

std::string runtime_library() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&getInferLibVersion), &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
}

std::string header_version() {
  return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
         std::to_string(NV_TENSORRT_PATCH);
}

}  // namespace m2f::trt

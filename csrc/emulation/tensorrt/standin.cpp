// The TensorRT stand-in's implementation (NvInfer.h here says what it is for and what it checks).
//
// An engine is text, one tensor a line, inputs first:
//   m2f-tensorrt-standin 1
//   input  NAME DTYPE SHAPE [profile MIN OPT MAX]
//   output NAME DTYPE SHAPE SCALE OFFSET STEP CYCLE
// SHAPE, MIN, OPT, MAX: comma-separated dimensions, -1 for a dynamic one (an output's -1 takes the
// batch, dimension 0, of the first input). The first input must be float32 or float16. Output
// element i of batch item b is SCALE * mean(input item b) + OFFSET + STEP * (i % CYCLE), stored as
// the output's dtype (float32, float16, int32, int64: rounded down, bool, uint8: > 0). Anything
// else is refused as TensorRT refuses a foreign engine: nullptr and a logged error.
#include <NvInfer.h>
#include <NvInferPlugin.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "emulation/runtime_state.hpp"

namespace {

using nvinfer1::DataType;
using nvinfer1::Dims;
using Severity = nvinfer1::ILogger::Severity;

std::mutex& registry_mutex() {
  static std::mutex* mutex = new std::mutex;
  return *mutex;
}
std::set<const nvinfer1::ILogger*>& loggers_seen() {
  static auto* seen = new std::set<const nvinfer1::ILogger*>;
  return *seen;
}
void saw_logger(const nvinfer1::ILogger* logger) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  loggers_seen().insert(logger);
}
nvinfer1::ILogger* plugin_logger = nullptr;  // as libnvinfer_plugin's: the last one it was initialised with

struct Tensor {
  std::string name;
  bool input = false;
  DataType type = DataType::kFLOAT;
  std::vector<std::int64_t> shape, min, opt, max;  // min/opt/max: inputs with a profile
  double scale = 0, offset = 0, step = 0;
  std::int64_t cycle = 1;
};

bool parse_dims(const std::string& text, std::vector<std::int64_t>& out) {
  out.clear();
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    try {
      out.push_back(std::stoll(part));
    } catch (...) {
      return false;
    }
  }
  return !out.empty() && out.size() <= static_cast<std::size_t>(Dims::MAX_DIMS);
}

bool parse_type(const std::string& name, DataType& type) {
  static const std::pair<const char*, DataType> names[] = {
      {"float32", DataType::kFLOAT}, {"float16", DataType::kHALF}, {"int32", DataType::kINT32},
      {"int64", DataType::kINT64},   {"bool", DataType::kBOOL},    {"uint8", DataType::kUINT8},
      {"int8", DataType::kINT8}};
  for (const auto& n : names)
    if (name == n.first) {
      type = n.second;
      return true;
    }
  return false;
}

Dims to_dims(const std::vector<std::int64_t>& v) {
  Dims d{};
  d.nbDims = static_cast<std::int32_t>(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) d.d[i] = v[i];
  return d;
}

std::vector<std::int64_t> from_dims(const Dims& d) {
  if (d.nbDims < 0 || d.nbDims > Dims::MAX_DIMS) return {};
  return std::vector<std::int64_t>(d.d, d.d + d.nbDims);
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu;
  if (exponent == 0) return (sign ? -1.f : 1.f) * std::ldexp(static_cast<float>(mantissa), -24);
  if (exponent == 31) return mantissa ? NAN : (sign ? -INFINITY : INFINITY);
  const std::uint32_t bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

std::uint16_t float_to_half(float f) {  // round to nearest, values the tests use (no subnormals needed)
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
  if (exponent <= 0) return sign;
  if (exponent >= 31) return static_cast<std::uint16_t>(sign | 0x7c00u);
  const std::uint32_t mantissa = (bits & 0x7fffffu) + 0x1000u;  // round half up on the dropped 13 bits
  return static_cast<std::uint16_t>(sign + (static_cast<std::uint32_t>(exponent) << 10) + (mantissa >> 13));
}

std::int64_t elements(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

struct Plan {};  // what a context's enqueues were planned for; replaced on a re-plan

// What one enqueueV3 computes, bound to the addresses and shapes of its call.
struct Job {
  std::weak_ptr<Plan> plan;
  nvinfer1::ILogger* logger;
  std::shared_ptr<std::atomic<int>> pending;  // eager enqueues of the context not yet run
  bool counted = false;
  const void* input = nullptr;
  DataType input_type = DataType::kFLOAT;
  std::vector<std::int64_t> input_shape;
  struct Out {
    void* data;
    const Tensor* tensor;
    std::vector<std::int64_t> shape;
  };
  std::vector<Out> outputs;

  void run() const {
    if (counted) --*pending;
    if (plan.expired()) {
      logger->log(Severity::kERROR,
                  "stand-in: a CUDA graph captured under an execution-context plan that has since been replaced was "
                  "replayed; its kernels would read freed or re-planned memory (its outputs were not written)");
      return;
    }
    const std::int64_t batch = input_shape.empty() ? 1 : input_shape[0];
    const std::int64_t item = batch > 0 ? elements(input_shape) / batch : 0;
    for (std::int64_t b = 0; b < batch; ++b) {
      double sum = 0;
      for (std::int64_t i = 0; i < item; ++i) {
        const std::int64_t k = b * item + i;
        sum += input_type == DataType::kHALF ? half_to_float(static_cast<const std::uint16_t*>(input)[k])
                                             : static_cast<const float*>(input)[k];
      }
      const double mean = item ? sum / static_cast<double>(item) : 0.0;
      for (const Out& o : outputs) {
        const Tensor& t = *o.tensor;
        const std::int64_t per_item = o.shape.empty() || o.shape[0] <= 0 ? 0 : elements(o.shape) / o.shape[0];
        for (std::int64_t i = 0; i < per_item; ++i) {
          const double v = t.scale * mean + t.offset + t.step * static_cast<double>(i % t.cycle);
          const std::int64_t k = b * per_item + i;
          switch (t.type) {
            case DataType::kFLOAT: static_cast<float*>(o.data)[k] = static_cast<float>(v); break;
            case DataType::kHALF: static_cast<std::uint16_t*>(o.data)[k] = float_to_half(static_cast<float>(v)); break;
            case DataType::kINT32: static_cast<std::int32_t*>(o.data)[k] = static_cast<std::int32_t>(std::floor(v)); break;
            case DataType::kINT64: static_cast<std::int64_t*>(o.data)[k] = static_cast<std::int64_t>(std::floor(v)); break;
            default: static_cast<std::uint8_t*>(o.data)[k] = v > 0 ? 1 : 0; break;
          }
        }
      }
    }
  }
};

class Engine;

class Context final : public nvinfer1::IExecutionContext {
 public:
  Context(const Engine& engine, nvinfer1::ILogger& logger, int device);
  Dims getTensorShape(char const* name) const noexcept override;
  bool setInputShape(char const* name, Dims const& dims) noexcept override;
  bool setTensorAddress(char const* name, void* data) noexcept override;
  void const* getTensorAddress(char const* name) const noexcept override;
  bool enqueueV3(cudaStream_t stream) noexcept override;

 private:
  bool fail(const std::string& message) const {
    logger_.log(Severity::kERROR, ("stand-in: " + message).c_str());
    return false;
  }
  int index(const char* name) const;
  std::vector<std::int64_t> resolved_shape(int i) const;

  const Engine& engine_;
  nvinfer1::ILogger& logger_;
  int device_;
  std::vector<std::vector<std::int64_t>> shapes_;  // inputs: as set (-1 where not yet)
  std::vector<void*> addresses_;
  std::shared_ptr<Plan> plan_;
  bool replan_ = true;
  std::shared_ptr<std::atomic<int>> pending_ = std::make_shared<std::atomic<int>>(0);
};

class Engine final : public nvinfer1::ICudaEngine {
 public:
  Engine(std::vector<Tensor> tensors, nvinfer1::ILogger& logger, int device)
      : tensors_(std::move(tensors)), logger_(logger), device_(device) {}
  nvinfer1::IExecutionContext* createExecutionContext() noexcept override {
    return new Context(*this, logger_, device_);
  }
  int32_t getNbIOTensors() const noexcept override { return static_cast<int32_t>(tensors_.size()); }
  char const* getIOTensorName(int32_t i) const noexcept override {
    return i >= 0 && i < getNbIOTensors() ? tensors_[static_cast<std::size_t>(i)].name.c_str() : nullptr;
  }
  nvinfer1::TensorIOMode getTensorIOMode(char const* name) const noexcept override {
    const Tensor* t = find(name);
    return !t ? nvinfer1::TensorIOMode::kNONE : t->input ? nvinfer1::TensorIOMode::kINPUT : nvinfer1::TensorIOMode::kOUTPUT;
  }
  DataType getTensorDataType(char const* name) const noexcept override {
    const Tensor* t = find(name);
    return t ? t->type : DataType::kFLOAT;
  }
  Dims getTensorShape(char const* name) const noexcept override {
    const Tensor* t = find(name);
    return t ? to_dims(t->shape) : Dims{-1, {}};
  }
  int32_t getNbOptimizationProfiles() const noexcept override {
    for (const auto& t : tensors_)
      if (!t.min.empty()) return 1;
    return 0;
  }
  Dims getProfileShape(char const* name, int32_t profile, nvinfer1::OptProfileSelector select) const noexcept override {
    const Tensor* t = find(name);
    if (!t || profile != 0 || t->min.empty()) return Dims{-1, {}};
    return to_dims(select == nvinfer1::OptProfileSelector::kMIN   ? t->min
                   : select == nvinfer1::OptProfileSelector::kOPT ? t->opt
                                                                  : t->max);
  }
  int64_t getDeviceMemorySizeV2() const noexcept override { return 1 << 20; }

  const Tensor* find(const char* name) const {
    for (const auto& t : tensors_)
      if (name && t.name == name) return &t;
    return nullptr;
  }
  const std::vector<Tensor>& tensors() const { return tensors_; }

 private:
  std::vector<Tensor> tensors_;
  nvinfer1::ILogger& logger_;
  int device_;
};

Context::Context(const Engine& engine, nvinfer1::ILogger& logger, int device)
    : engine_(engine), logger_(logger), device_(device) {
  for (const auto& t : engine.tensors()) {
    // An input the profile covers has no shape until setInputShape, even where the profile pins it.
    shapes_.push_back(t.input && t.min.empty() ? t.shape : std::vector<std::int64_t>(t.shape.size(), -1));
    addresses_.push_back(nullptr);
  }
}

int Context::index(const char* name) const {
  const auto& ts = engine_.tensors();
  for (std::size_t i = 0; i < ts.size(); ++i)
    if (name && ts[i].name == name) return static_cast<int>(i);
  return -1;
}

std::vector<std::int64_t> Context::resolved_shape(int i) const {
  const Tensor& t = engine_.tensors()[static_cast<std::size_t>(i)];
  if (t.input) return shapes_[static_cast<std::size_t>(i)];
  const std::int64_t batch = shapes_.empty() || shapes_[0].empty() ? -1 : shapes_[0][0];
  std::vector<std::int64_t> shape = t.shape;
  for (auto& d : shape)
    if (d < 0) d = batch;
  return shape;
}

Dims Context::getTensorShape(char const* name) const noexcept {
  const int i = index(name);
  return i < 0 ? Dims{-1, {}} : to_dims(resolved_shape(i));
}

bool Context::setInputShape(char const* name, Dims const& dims) noexcept {
  const int i = index(name);
  if (i < 0 || !engine_.tensors()[static_cast<std::size_t>(i)].input)
    return fail(std::string("setInputShape: no input '") + (name ? name : "") + "'");
  const Tensor& t = engine_.tensors()[static_cast<std::size_t>(i)];
  const std::vector<std::int64_t> shape = from_dims(dims);
  if (shape.size() != t.shape.size()) return fail("setInputShape: wrong rank for '" + t.name + "'");
  for (std::size_t d = 0; d < shape.size(); ++d) {
    const bool fits = t.min.empty() ? (t.shape[d] < 0 || shape[d] == t.shape[d])
                                    : (shape[d] >= t.min[d] && shape[d] <= t.max[d]);
    if (!fits) return fail("setInputShape: shape outside the profile of '" + t.name + "'");
  }
  if (shapes_[static_cast<std::size_t>(i)] != shape) replan_ = true;
  shapes_[static_cast<std::size_t>(i)] = shape;
  return true;
}

bool Context::setTensorAddress(char const* name, void* data) noexcept {
  const int i = index(name);
  if (i < 0) return fail(std::string("setTensorAddress: no tensor '") + (name ? name : "") + "'");
  if (data == nullptr || reinterpret_cast<std::uintptr_t>(data) % 256 != 0)
    return fail("setTensorAddress: '" + engine_.tensors()[static_cast<std::size_t>(i)].name + "' null or misaligned");
  addresses_[static_cast<std::size_t>(i)] = data;
  return true;
}

void const* Context::getTensorAddress(char const* name) const noexcept {
  const int i = index(name);
  return i < 0 ? nullptr : addresses_[static_cast<std::size_t>(i)];
}

bool Context::enqueueV3(cudaStream_t stream) noexcept {
  try {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != device_)
      return fail("enqueueV3 on device " + std::to_string(current) + " for an engine deserialized on device " +
                  std::to_string(device_));
    const auto& ts = engine_.tensors();
    for (std::size_t i = 0; i < ts.size(); ++i) {
      if (ts[i].input)
        for (auto d : shapes_[i])
          if (d < 0) return fail("input '" + ts[i].name + "' has no shape: call setInputShape before enqueueV3");
      if (!addresses_[i]) return fail("tensor '" + ts[i].name + "' has no address");
    }
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) return fail("enqueueV3: unusable stream");
    const bool capturing = capture != cudaStreamCaptureStatusNone;
    if (capturing && (replan_ || !plan_))
      return fail("enqueueV3 inside stream capture right after an input shape changed: the context re-plans and "
                  "allocates on this call, which a capture cannot hold");
    if (capturing && pending_->load() > 0)
      return fail("stream capture began while earlier enqueues of this context were still running: synchronise "
                  "the stream after warm-up, before capturing");
    if (replan_ || !plan_) {
      plan_ = std::make_shared<Plan>();  // the previous plan's resources go: graphs captured under it are stale
      replan_ = false;
    }
    Job job;
    job.plan = plan_;
    job.logger = &logger_;
    job.pending = pending_;
    job.counted = !capturing;
    for (std::size_t i = 0; i < ts.size(); ++i) {
      if (ts[i].input) {
        if (job.input == nullptr) {
          job.input = addresses_[i];
          job.input_type = ts[i].type;
          job.input_shape = shapes_[i];
        }
      } else {
        job.outputs.push_back(Job::Out{addresses_[i], &ts[i], resolved_shape(static_cast<int>(i))});
      }
    }
    if (!capturing) ++*pending_;
    m2f::emulation::enqueue(stream, [job = std::move(job)] { job.run(); });
    return true;
  } catch (...) {
    return fail("enqueueV3: out of host memory");
  }
}

class Runtime final : public nvinfer1::IRuntime {
 public:
  explicit Runtime(nvinfer1::ILogger& logger) : logger_(logger) {}
  int32_t getNbDLACores() const noexcept override { return 0; }
  void setDLACore(int32_t) noexcept override {}
  nvinfer1::ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept override;

 private:
  nvinfer1::ILogger& logger_;
};

nvinfer1::ICudaEngine* Runtime::deserializeCudaEngine(void const* blob, std::size_t size) noexcept {
  auto refuse = [&](const std::string& why) -> nvinfer1::ICudaEngine* {
    logger_.log(Severity::kERROR, ("stand-in: deserialization failed: " + why).c_str());
    return nullptr;
  };
  try {
    std::stringstream in(std::string(static_cast<const char*>(blob), size));
    std::string line;
    if (!std::getline(in, line) || line != "m2f-tensorrt-standin 1")
      return refuse("Serialization assertion magicTagRead == kMAGIC_TAG failed. Magic tag does not match");
    std::vector<Tensor> tensors;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      std::stringstream fields(line);
      std::string kind, type, shape;
      Tensor t;
      fields >> kind >> t.name >> type >> shape;
      if ((kind != "input" && kind != "output") || !parse_type(type, t.type) || !parse_dims(shape, t.shape))
        return refuse("cannot read '" + line + "'");
      t.input = kind == "input";
      if (t.input) {
        std::string word, lo, opt, hi;
        if (fields >> word) {
          if (word != "profile" || !(fields >> lo >> opt >> hi) || !parse_dims(lo, t.min) || !parse_dims(opt, t.opt) ||
              !parse_dims(hi, t.max))
            return refuse("cannot read the profile in '" + line + "'");
        }
        if (tensors.empty() && t.type != DataType::kFLOAT && t.type != DataType::kHALF)
          return refuse("the first input must be float32 or float16");
      } else if (!(fields >> t.scale >> t.offset >> t.step >> t.cycle) || t.cycle < 1) {
        return refuse("an output needs SCALE OFFSET STEP CYCLE: '" + line + "'");
      }
      if (t.type == DataType::kINT8) return refuse("int8 tensors are not emulated");
      tensors.push_back(std::move(t));
    }
    if (tensors.empty() || !tensors.front().input) return refuse("no input first");
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return refuse("no device");
    if (plugin_logger) plugin_logger->log(Severity::kVERBOSE, "stand-in plugin library: creators looked up");
    return new Engine(std::move(tensors), logger_, device);
  } catch (...) {
    return refuse("out of host memory");
  }
}

}  // namespace

namespace nvinfer1 {
IRuntime* createInferRuntime(ILogger& logger) noexcept {
  saw_logger(&logger);
  try {
    return new Runtime(logger);
  } catch (...) {
    return nullptr;
  }
}
}  // namespace nvinfer1

extern "C" int32_t getInferLibVersion() noexcept { return NV_TENSORRT_VERSION; }

extern "C" bool initLibNvInferPlugins(void* logger, char const*) {
  auto* typed = static_cast<nvinfer1::ILogger*>(logger);
  saw_logger(typed);
  plugin_logger = typed;
  if (typed) typed->log(Severity::kVERBOSE, "stand-in plugin library: registered");
  return true;
}

int standin_logger_count() noexcept {
  std::lock_guard<std::mutex> lock(registry_mutex());
  return static_cast<int>(loggers_seen().size());
}

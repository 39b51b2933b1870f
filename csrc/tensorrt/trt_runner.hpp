// Runs a serialized TensorRT engine by tensor name (enqueueV3): the one API present from TensorRT 8.5
// to 11. Knows nothing of Python; compiled only where TensorRT was found.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "m2f/tensor_view.hpp"

namespace m2f::trt {

// Thrown with TensorRT's own log lines attached, so the reason (version mismatch, engine built for
// another GPU, missing plugin, out of memory) reaches the user.
class TensorRTError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TensorInfo {
  std::string name;
  bool is_input = false;
  DType dtype = DType::float32;
  std::string trt_dtype;                 // TensorRT's name, also for types m2f::DType lacks
  std::vector<std::int64_t> shape;       // -1 where dynamic
  std::vector<std::int64_t> min_shape;   // inputs: optimisation profile 0
  std::vector<std::int64_t> opt_shape;
  std::vector<std::int64_t> max_shape;
};

// Host and GPU time of the last Runner::enqueue(). gpu_ms is valid once gpu_done: the two timing
// events around the enqueue are read with cudaEventQuery, never waited for.
struct EnqueueTimings {
  bool valid = false;     // an enqueue() has completed on the host
  double enqueue_ms = 0;  // host time of the enqueueV3 call (or of the graph launch that replays it)
  bool gpu_done = false;
  float gpu_ms = 0.f;
};

// Makes `device` current for the life of the scope, then gives the caller's back: a runner's
// TensorRT context and buffers belong to the device it was built on, and the calling thread's
// current device may be any (a new thread starts on device 0).
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();  // restores the previous device; never throws
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
};

class Runner {
 public:
  // engine: the serialized engine bytes. dla_core >= 0 runs on that DLA core (the engine must have
  // been built for DLA). device: the CUDA device the engine is deserialized on.
  Runner(const void* engine, std::size_t size, int dla_core = -1, int device = 0);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  const TensorInfo& tensor(const std::string& name) const;
  std::size_t device_memory_size() const;
  int device() const noexcept { return device_; }

  // Shapes for a dynamic input; checked against the profile with a message naming the tensor.
  void set_input_shape(const std::string& name, const std::vector<std::int64_t>& shape);
  // Valid after every input shape is set; throws for an output whose shape depends on the data
  // (TensorRT reports -1 there, and such outputs need an IOutputAllocator m2f_edge does not provide).
  std::vector<std::int64_t> output_shape(const std::string& name) const;
  // TensorRT requires device addresses aligned to 256 bytes; a misaligned one is refused here.
  void set_tensor_address(const std::string& name, void* device_pointer);
  // Bumped whenever an input shape given to TensorRT changes, by any user of this runner: TensorRT
  // re-plans the context then, and work captured under another generation is stale (it may point
  // at memory the re-plan freed), even if the shapes have since come back to what they were.
  std::uint64_t plan_generation() const noexcept { return plan_generation_; }
  // True once an enqueue ran outside stream capture at the current generation: TensorRT allocates
  // and re-plans on the first enqueue after a shape change, which must not happen inside a capture.
  bool plan_settled() const noexcept { return eager_generation_ == plan_generation_; }
  // With graphs enabled, a call whose shapes and addresses match the previous one replays a CUDA
  // graph captured from enqueueV3 (the first call with new shapes or addresses runs eagerly, the
  // second captures). Capture failure, or an engine that cannot be captured, falls back to eager
  // enqueueV3 for good.
  void enqueue(cudaStream_t stream);
  void set_use_cuda_graph(bool use) noexcept { use_graph_ = use; }
  // enqueueV3 and nothing else: for callers that capture a larger graph themselves (not timed).
  void enqueue_eager(cudaStream_t stream);
  bool graph_active() const noexcept;
  // Timings of the last enqueue() (not of enqueue_eager()).
  EnqueueTimings last_timings() const;
  // The TensorRT log lines of warning level and above seen since the last call: this runner's, and
  // those logged where no runner was calling TensorRT (the plugin library, work run later).
  std::string take_log();

 private:
  void enqueue_or_replay(cudaStream_t stream);
  void run_enqueue_v3(cudaStream_t stream);
  void require_input_shapes() const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<TensorInfo> tensors_;
  int device_ = 0;
  bool use_graph_ = false;
  std::uint64_t plan_generation_ = 1;
  std::uint64_t eager_generation_ = 0;
};

// The version of the TensorRT library loaded at run time ("major.minor.patch"); compared with the
// headers' version to explain "engine built with another TensorRT" errors.
std::string runtime_version();
std::string header_version();
// The file the loaded libnvinfer came from ("" when the loader cannot say): with several TensorRT
// installs (a tarball, PyPI's wheel) the first one loaded into the process serves every user.
std::string runtime_library();

}  // namespace m2f::trt

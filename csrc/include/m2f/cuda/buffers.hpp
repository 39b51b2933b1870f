// Move-only owners of CUDA resources. Destructors never throw (see release_quietly).
//   DeviceBuffer  device memory (discrete GPUs, scratch)
//   PinnedBuffer  page-locked host memory: staging for async copies
//   MappedBuffer  page-locked host memory mapped into the device address space: zero-copy on
//                 integrated GPUs (Jetson), where CPU and GPU share DRAM
//   Stream, Event, CudaGraph, GraphExec
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "m2f/cuda/check.hpp"

namespace m2f::cuda {

// The shared shape of every owner: a handle, a deleter run once, moves that leave the source empty.
template <typename Handle, typename Traits>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(Handle handle) : handle_(handle) {}
  ~UniqueHandle() { reset(); }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  UniqueHandle(UniqueHandle&& other) noexcept : handle_(std::exchange(other.handle_, Handle{})) {}
  UniqueHandle& operator=(UniqueHandle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, Handle{});
    }
    return *this;
  }
  Handle get() const noexcept { return handle_; }
  explicit operator bool() const noexcept { return handle_ != Handle{}; }
  void reset() noexcept {
    if (handle_ != Handle{}) {
      Handle h = std::exchange(handle_, Handle{});
      release_quietly([h] { Traits::release(h); });
    }
  }

 private:
  Handle handle_{};
};

struct DeviceMemoryTraits {
  static void release(void* p) { M2F_CUDA_CHECK(cudaFree(p)); }
};
struct HostMemoryTraits {
  static void release(void* p) { M2F_CUDA_CHECK(cudaFreeHost(p)); }
};
struct StreamTraits {
  static void release(cudaStream_t s) { M2F_CUDA_CHECK(cudaStreamDestroy(s)); }
};
struct EventTraits {
  static void release(cudaEvent_t e) { M2F_CUDA_CHECK(cudaEventDestroy(e)); }
};
struct GraphTraits {
  static void release(cudaGraph_t g) { M2F_CUDA_CHECK(cudaGraphDestroy(g)); }
};
struct GraphExecTraits {
  static void release(cudaGraphExec_t g) { M2F_CUDA_CHECK(cudaGraphExecDestroy(g)); }
};

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    void* p = nullptr;
    if (bytes > 0) M2F_CUDA_CHECK(cudaMalloc(&p, bytes));
    memory_ = UniqueHandle<void*, DeviceMemoryTraits>(p);
  }
  void* data() const noexcept { return memory_.get(); }
  template <typename T>
  T* as() const noexcept { return static_cast<T*>(memory_.get()); }
  std::size_t size() const noexcept { return bytes_; }
  // Grows (never shrinks) so that a buffer reused frame after frame allocates once.
  void ensure(std::size_t bytes) {
    if (bytes > bytes_) *this = DeviceBuffer(bytes);
  }

 private:
  UniqueHandle<void*, DeviceMemoryTraits> memory_;
  std::size_t bytes_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t bytes) : bytes_(bytes) {
    void* p = nullptr;
    if (bytes > 0) M2F_CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocDefault));
    memory_ = UniqueHandle<void*, HostMemoryTraits>(p);
  }
  void* data() const noexcept { return memory_.get(); }
  template <typename T>
  T* as() const noexcept { return static_cast<T*>(memory_.get()); }
  std::size_t size() const noexcept { return bytes_; }
  void ensure(std::size_t bytes) {
    if (bytes > bytes_) *this = PinnedBuffer(bytes);
  }

 private:
  UniqueHandle<void*, HostMemoryTraits> memory_;
  std::size_t bytes_ = 0;
};

// Host memory the device reads and writes in place. host() and device() name the same bytes; on an
// integrated GPU no copy is ever made, on a discrete GPU every device access crosses PCIe.
class MappedBuffer {
 public:
  MappedBuffer() = default;
  explicit MappedBuffer(std::size_t bytes) : bytes_(bytes) {
    void* p = nullptr;
    if (bytes > 0) {
      M2F_CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocMapped));
      memory_ = UniqueHandle<void*, HostMemoryTraits>(p);
      M2F_CUDA_CHECK(cudaHostGetDevicePointer(&device_, p, 0));
    }
  }
  MappedBuffer(MappedBuffer&& other) noexcept
      : memory_(std::move(other.memory_)),
        device_(std::exchange(other.device_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  MappedBuffer& operator=(MappedBuffer&& other) noexcept {
    memory_ = std::move(other.memory_);
    device_ = std::exchange(other.device_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    return *this;
  }
  void* host() const noexcept { return memory_.get(); }
  void* device() const noexcept { return device_; }
  std::size_t size() const noexcept { return bytes_; }
  void ensure(std::size_t bytes) {
    if (bytes > bytes_) *this = MappedBuffer(bytes);
  }

 private:
  UniqueHandle<void*, HostMemoryTraits> memory_;
  void* device_ = nullptr;
  std::size_t bytes_ = 0;
};

class Stream {
 public:
  // Non-blocking: work on it does not serialise with the legacy default stream.
  static Stream create() {
    cudaStream_t s = nullptr;
    M2F_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return Stream(s);
  }
  Stream() = default;
  cudaStream_t get() const noexcept { return stream_.get(); }
  void synchronize() const { M2F_CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }

 private:
  explicit Stream(cudaStream_t s) : stream_(s) {}
  UniqueHandle<cudaStream_t, StreamTraits> stream_;
};

class Event {
 public:
  static Event create(bool timing = false) {
    cudaEvent_t e = nullptr;
    M2F_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
    return Event(e);
  }
  Event() = default;
  cudaEvent_t get() const noexcept { return event_.get(); }
  void record(cudaStream_t stream) const { M2F_CUDA_CHECK(cudaEventRecord(event_.get(), stream)); }
  void synchronize() const { M2F_CUDA_CHECK(cudaEventSynchronize(event_.get())); }
  bool done() const {
    cudaError_t status = cudaEventQuery(event_.get());
    if (status == cudaErrorNotReady) {
      cudaGetLastError();
      return false;
    }
    M2F_CUDA_CHECK(status);
    return true;
  }
  // Milliseconds between two recorded timing events.
  static float elapsed_ms(const Event& start, const Event& end) {
    float ms = 0.f;
    M2F_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), end.get()));
    return ms;
  }

 private:
  explicit Event(cudaEvent_t e) : event_(e) {}
  UniqueHandle<cudaEvent_t, EventTraits> event_;
};

class GraphExec {
 public:
  GraphExec() = default;
  explicit GraphExec(cudaGraphExec_t exec) : exec_(exec) {}
  cudaGraphExec_t get() const noexcept { return exec_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(exec_); }
  void launch(cudaStream_t stream) const { M2F_CUDA_CHECK(cudaGraphLaunch(exec_.get(), stream)); }

 private:
  UniqueHandle<cudaGraphExec_t, GraphExecTraits> exec_;
};

class CudaGraph {
 public:
  CudaGraph() = default;
  explicit CudaGraph(cudaGraph_t graph) : graph_(graph) {}
  cudaGraph_t get() const noexcept { return graph_.get(); }
  explicit operator bool() const noexcept { return static_cast<bool>(graph_); }
  // cudaGraphInstantiateWithFlags has one signature from CUDA 11.4 to 13 (cudaGraphInstantiate does not).
  GraphExec instantiate() const {
    cudaGraphExec_t exec = nullptr;
    M2F_CUDA_CHECK(cudaGraphInstantiateWithFlags(&exec, graph_.get(), 0));
    return GraphExec(exec);
  }

 private:
  UniqueHandle<cudaGraph_t, GraphTraits> graph_;
};

// Captures the work fn() enqueues on stream into a graph. Returns an empty graph, and leaves the
// stream usable, when something in fn() cannot be captured (the caller then runs it eagerly).
template <typename Fn>
CudaGraph capture_graph(cudaStream_t stream, Fn&& fn) {
  // The legacy default stream, or a stream already capturing, cannot begin a capture: run eagerly.
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return CudaGraph();
  }
  bool enqueued = true;
  try {
    fn();
  } catch (...) {
    enqueued = false;
  }
  cudaGraph_t graph = nullptr;
  cudaError_t status = cudaStreamEndCapture(stream, &graph);
  CudaGraph owned(graph);
  if (!enqueued || status != cudaSuccess || graph == nullptr) {
    cudaGetLastError();
    return CudaGraph();
  }
  return owned;
}

}  // namespace m2f::cuda

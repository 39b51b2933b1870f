// What a caller of a Runner keeps from call to call besides the runner: device copies of host
// inputs, a stream of its own, the placeholder empty outputs point at, and a pool of output buffers
// that are handed out again only once nobody else holds them.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "m2f/cuda/buffers.hpp"

namespace m2f::trt {

class EngineIO {
 public:
  // The device buffer a host input `name` is copied into, reused call after call: no cudaMalloc per
  // call, and an address that stays put (CUDA graphs). Before it is handed out again, the previous
  // enqueue that read it must be done: this waits for it only when that call did not wait itself.
  void* staging_input(const std::string& name, std::size_t bytes);
  // After an enqueue that read staged inputs: marks when those buffers are free again.
  void inputs_enqueued(cudaStream_t stream);
  // For calls that name no stream and wait for the result: a non-blocking stream of this object's own.
  // TensorRT (10 and later) warns that the legacy default stream costs extra device synchronisations,
  // and it cannot be captured into a CUDA graph.
  cudaStream_t own_stream();
  // TensorRT wants a non-null, 256-byte aligned address for every output, even one with no elements:
  // such outputs all point at this small buffer, never read.
  void* empty_output_address();

 private:
  std::map<std::string, cuda::DeviceBuffer> staging_;
  cuda::Event staging_read_;
  cuda::Stream stream_;
  cuda::DeviceBuffer empty_output_;
};

// Buffers by tensor name, at most `capacity` each: take() hands out one the pool alone owns (its
// use_count is 1) and that `fits`, else a new one from `make` (kept while there is room). So a result
// handed out is never overwritten by a later call while its holder keeps it.
template <typename Buffer>
class BufferPool {
 public:
  explicit BufferPool(std::size_t capacity) : capacity_(capacity) {}

  template <typename Fits, typename Make>
  std::shared_ptr<Buffer> take(const std::string& name, Fits&& fits, Make&& make) {
    auto& held = pool_[name];
    for (const auto& buffer : held)
      if (buffer.use_count() == 1 && fits(*buffer)) return buffer;
    std::shared_ptr<Buffer> fresh = make();
    if (held.size() < capacity_) held.push_back(fresh);
    return fresh;
  }

 private:
  std::size_t capacity_;
  std::map<std::string, std::vector<std::shared_ptr<Buffer>>> pool_;
};

}  // namespace m2f::trt

// The one way CUDA calls are checked: M2F_CUDA_CHECK(call) throws m2f::CudaError naming the file,
// line and call. Destructors, which must never throw, go through the same macro inside
// m2f::release_quietly, which reports and swallows the error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace m2f {

class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const std::string& message) : std::runtime_error(message), code_(code) {}
  cudaError_t code() const noexcept { return code_; }
  bool out_of_memory() const noexcept { return code_ == cudaErrorMemoryAllocation; }

 private:
  cudaError_t code_;
};

namespace detail {

inline std::string cuda_error_message(cudaError_t status, const char* call, const char* file, int line) {
  std::string message = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status) + " (" + call +
                        " at " + file + ":" + std::to_string(line) + ")";
  if (status == cudaErrorMemoryAllocation) message = "out of GPU memory: " + message;
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver)
    message = "no usable CUDA device or driver: " + message;
  return message;
}

inline void cuda_check(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  // Clears a non-sticky error so that a failed frame does not poison the next call.
  cudaGetLastError();
  throw CudaError(status, cuda_error_message(status, call, file, line));
}

}  // namespace detail

// Runs a release call (free, destroy) from a destructor: errors are reported on stderr, never thrown.
template <typename Fn>
void release_quietly(Fn&& release) noexcept {
  try {
    release();
  } catch (const CudaError& e) {
    // At interpreter exit the runtime may already be gone; the memory goes with the process.
    if (e.code() != cudaErrorCudartUnloading)
      std::fprintf(stderr, "m2f_edge: ignored CUDA error while releasing a resource: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "m2f_edge: ignored CUDA error while releasing a resource: %s\n", e.what());
  } catch (...) {
  }
}

}  // namespace m2f

#define M2F_CUDA_CHECK(call) ::m2f::detail::cuda_check((call), #call, __FILE__, __LINE__)

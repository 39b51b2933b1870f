// The CUDA emulation build (M2F_CUDA=EMULATE): the .cu files compiled as plain C++ against the
// CUDA headers, with a CUDA runtime (csrc/emulation/runtime.cpp) that keeps "device" memory in host
// memory and runs each kernel on the CPU, every thread of every block. It exists so that the GPU
// tests (every kernel against its CPU twin) execute on machines without a GPU, in CI included: it
// checks the kernels' indexing, launch configurations, guards and reductions, and the host code
// around them. It cannot check timing, races, memory coherence or the device's float intrinsics
// (device code takes the same host paths of the m2f/math headers as the CPU twins). Never shipped:
// a package build picks it only when asked by name.
//
// This header is force-included (-include) before anything else in the .cu files, so that its
// qualifiers come before CUDA's host_defines.h, which keeps those already defined.
#pragma once

#if !defined(M2F_CUDA_EMULATION)
#error "emulation/emulation.hpp belongs to the CUDA emulation build (M2F_CUDA=EMULATE) only"
#endif

#define __host__
#define __device__
#define __global__
// Launches run one at a time (run_grid holds a process-wide lock), their blocks one after another,
// a block's threads as fibers of one host thread: one static copy is one copy per running block.
// Unlike a GPU's, it starts zeroed and keeps the previous block's values: a kernel that reads shared
// memory its block never wrote is not caught. (A linker section to refill between blocks cannot
// hold the statics of template kernels: GCC gives those their own COMDAT sections.)
#define __shared__ static

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace m2f::emulation {

// What threadIdx, blockIdx, blockDim and gridDim read in the thread now running.
struct KernelThread {
  uint3 thread_index{};
  uint3 block_index{};
  dim3 block_dim;
  dim3 grid_dim;
};
// Plain (not thread_local) for speed: kernels read it at every threadIdx, and launches never overlap.
inline KernelThread current_thread;

using ThreadBody = void (*)(const void* context);

// Checks the launch as CUDA does (grid and block limits, device, stream handle), then runs body
// once per thread of grid x block, one launch at a time in the process, in stream order when
// something waits for it (runtime.cpp), `context` kept alive by `owner` until then. A
// refused launch becomes the calling thread's last error, read by cudaGetLastError as after <<<>>>.
void run_grid(dim3 grid, dim3 block, cudaStream_t stream, ThreadBody body, std::shared_ptr<const void> owner);

// __syncthreads, from the source line that calls it: suspends the calling thread's fiber until
// every thread of its block waits at a barrier; threads waiting at different lines are an error.
void sync_block_threads(int line);

template <typename Call>
class Launch {
 public:
  Launch(Call call, dim3 grid, dim3 block, cudaStream_t stream)
      : call_(call), grid_(grid), block_(block), stream_(stream) {}

  template <typename... Arguments>
  void operator()(Arguments&&... arguments) const {
    // Evaluated and copied once, at the launch, as CUDA copies kernel parameters.
    using Parameters = std::tuple<std::decay_t<Arguments>...>;
    struct Context {
      Call call;
      Parameters parameters;
    };
    auto context = std::make_shared<const Context>(Context{call_, Parameters(std::forward<Arguments>(arguments)...)});
    run_grid(
        grid_, block_, stream_,
        [](const void* p) noexcept {  // kernels cannot throw; one that did would end the process here
          const Context& c = *static_cast<const Context*>(p);
          std::apply(c.call, c.parameters);
        },
        context);
  }

 private:
  Call call_;
  dim3 grid_, block_;
  cudaStream_t stream_;
};

template <typename Word, typename Value, typename Update>
Value atomic_update(Value* address, Update update) {
  static_assert(sizeof(Word) == sizeof(Value), "atomic word size");
  Word* word = reinterpret_cast<Word*>(address);
  Word expected = __atomic_load_n(word, __ATOMIC_RELAXED);
  for (;;) {
    Value old;
    std::memcpy(&old, &expected, sizeof old);
    const Value desired_value = update(old);
    Word desired;
    std::memcpy(&desired, &desired_value, sizeof desired);
    if (__atomic_compare_exchange_n(word, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return old;
  }
}

}  // namespace m2f::emulation

#define threadIdx (::m2f::emulation::current_thread.thread_index)
#define blockIdx (::m2f::emulation::current_thread.block_index)
#define blockDim (::m2f::emulation::current_thread.block_dim)
#define gridDim (::m2f::emulation::current_thread.grid_dim)

#define __syncthreads() ::m2f::emulation::sync_block_threads(__LINE__)

// The device functions the kernels call that have no host twin in the CUDA headers.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

inline float __int_as_float(int bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}
inline unsigned __float_as_uint(float value) {
  unsigned bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// Atomics: launches never overlap, but real ones cost little and keep the kernels' intent.
inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* address, unsigned value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* address, float value) {
  return ::m2f::emulation::atomic_update<std::uint32_t>(address, [value](float old) { return old + value; });
}
inline double atomicAdd(double* address, double value) {
  return ::m2f::emulation::atomic_update<std::uint64_t>(address, [value](double old) { return old + value; });
}
inline int atomicMin(int* address, int value) {
  return ::m2f::emulation::atomic_update<int>(address, [value](int old) { return value < old ? value : old; });
}
inline int atomicMax(int* address, int value) {
  return ::m2f::emulation::atomic_update<int>(address, [value](int old) { return value > old ? value : old; });
}

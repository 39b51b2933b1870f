// What the emulated kernel launches need from the emulated CUDA runtime (runtime.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <functional>

namespace m2f::emulation {

// The calling host thread's last error, as cudaGetLastError reads it.
void set_last_error(cudaError_t status) noexcept;

// A kernel that failed while running: as in CUDA the error is sticky, returned by this and every
// later synchronisation (and set as the running thread's last error).
void record_kernel_failure(cudaError_t status) noexcept;

// Why a launch on `stream` fails before it runs (no device, a stream not live), or cudaSuccess.
cudaError_t launch_refusal(cudaStream_t stream) noexcept;

// Runs `work` in `stream`'s order, when something waits for it (at once with M2F_EMULATION_IMMEDIATE=1).
void enqueue(cudaStream_t stream, std::function<void()> work);

}  // namespace m2f::emulation

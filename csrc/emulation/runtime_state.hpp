// What the emulated kernel launches need from the emulated CUDA runtime (runtime.cpp).
#pragma once

#include <cuda_runtime_api.h>

namespace m2f::emulation {

// The calling host thread's last error, as cudaGetLastError reads it.
void set_last_error(cudaError_t status) noexcept;

// The default streams, or a stream created and not yet destroyed.
bool stream_is_usable(cudaStream_t stream) noexcept;

}  // namespace m2f::emulation

// Marks functions callable from host and device code, so per-element math is written once.
#pragma once

#if defined(__CUDACC__)
#define M2F_HD __host__ __device__ __forceinline__
#else
#define M2F_HD inline
#endif

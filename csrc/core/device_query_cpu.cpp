// The answer of a build without CUDA; the CUDA build compiles csrc/cuda/device_query.cpp instead.
#ifndef M2F_WITH_CUDA
#include "m2f/device_query.hpp"

namespace m2f {
GpuInfo query_gpu() {
  GpuInfo info;
  info.error = "m2f_edge was built without CUDA";
  return info;
}
}  // namespace m2f
#endif

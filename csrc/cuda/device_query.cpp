#include <cuda_runtime_api.h>

#include "m2f/device_query.hpp"

namespace m2f {

GpuInfo query_gpu() {
  GpuInfo info;
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    info.error = cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return info;
  }
  info.device_count = count;
  if (count == 0) {
    info.error = "no CUDA device";
    return info;
  }
  cudaDeviceProp prop{};
  status = cudaGetDeviceProperties(&prop, 0);
  if (status != cudaSuccess) {
    info.error = cudaGetErrorString(status);
    cudaGetLastError();
    return info;
  }
  info.present = true;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.integrated = prop.integrated != 0;
  info.can_map_host_memory = prop.canMapHostMemory != 0;
  cudaDriverGetVersion(&info.driver_version);
  return info;
}

}  // namespace m2f

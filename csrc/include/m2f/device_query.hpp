// Run-time facts about the GPU, answered without failing where there is no GPU or no CUDA build.
#pragma once

#include <string>

namespace m2f {

struct GpuInfo {
  bool present = false;        // a usable CUDA device was found at run time
  int device_count = 0;
  std::string name;            // device 0
  int compute_major = 0, compute_minor = 0;
  bool integrated = false;     // shares DRAM with the CPU (Jetson)
  bool can_map_host_memory = false;
  int driver_version = 0;      // as cudaDriverGetVersion, 0 when unknown
  std::string error;           // why present is false, where CUDA said
};

GpuInfo query_gpu();

}  // namespace m2f

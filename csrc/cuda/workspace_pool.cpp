// The per-device pool behind WorkspaceLease.
#include "m2f/cuda/workspace_pool.hpp"

#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "m2f/cuda/check.hpp"

namespace m2f::cuda {
namespace {

using FreeLists = std::map<int, std::vector<std::unique_ptr<PostprocessWorkspace>>>;

std::mutex& pool_mutex() {
  static auto* m = new std::mutex;  // never destroyed: leases may end during interpreter exit
  return *m;
}

FreeLists& free_lists() {
  static auto* lists = new FreeLists;
  return *lists;
}

}  // namespace

WorkspaceLease::WorkspaceLease(cudaStream_t stream) : stream_(stream) {
  M2F_CUDA_CHECK(cudaGetDevice(&device_));
  std::lock_guard<std::mutex> lock(pool_mutex());
  auto& free = free_lists()[device_];
  if (free.empty()) {
    workspace_ = std::make_unique<PostprocessWorkspace>();
  } else {
    workspace_ = std::move(free.back());
    free.pop_back();
  }
}

WorkspaceLease::WorkspaceLease(WorkspaceLease&& other) noexcept
    : stream_(other.stream_),
      device_(other.device_),
      finished_(other.finished_),
      broken_(other.broken_),
      workspace_(std::move(other.workspace_)) {}

void WorkspaceLease::wait_for_stream() noexcept {
  if (finished_ || broken_) return;
  if (cudaStreamSynchronize(stream_) != cudaSuccess) {
    cudaGetLastError();
    broken_ = true;  // a broken context: drop the workspace rather than hand it to the next call
    return;
  }
  finished_ = true;
}

WorkspaceLease::~WorkspaceLease() {
  if (!workspace_) return;
  wait_for_stream();
  if (broken_) return;
  try {
    std::lock_guard<std::mutex> lock(pool_mutex());
    free_lists()[device_].push_back(std::move(workspace_));
  } catch (...) {  // a destructor never throws: the workspace is freed instead of pooled
  }
}

}  // namespace m2f::cuda

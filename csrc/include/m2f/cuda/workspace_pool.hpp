// Post-processing scratch for one-off calls (_core.gpu.postprocess_*), per device, leased for the
// length of one call. Compiled only in CUDA builds.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "m2f/cuda/ops.hpp"

namespace m2f::cuda {

// Two threads, or two callers on different streams, never share a workspace at the same time; a
// workspace is only used on the device it was allocated on. A call waits for its stream before it
// hands the lease back (read_results synchronises; a call that failed waits here), so a pooled
// workspace has no work in flight. The pool keeps one grown workspace per concurrent caller and
// device; it is never destroyed (the memory goes with the process, after the CUDA runtime may be
// gone). Move-only.
class WorkspaceLease {
 public:
  // Takes a workspace of the current device from the pool, or a new one.
  explicit WorkspaceLease(cudaStream_t stream);
  WorkspaceLease(const WorkspaceLease&) = delete;
  WorkspaceLease& operator=(const WorkspaceLease&) = delete;
  WorkspaceLease(WorkspaceLease&& other) noexcept;
  WorkspaceLease& operator=(WorkspaceLease&&) = delete;
  // Hands the workspace back; one whose call did not finish is first waited for, and dropped if
  // the context is broken. Never throws.
  ~WorkspaceLease();

  PostprocessWorkspace& get() { return *workspace_; }
  // The call's results were read (its stream was synchronised): no kernel uses the workspace now.
  void finished() { finished_ = true; }
  // After a failure: waits for the stream (callers release their interpreter lock around this).
  void wait_for_stream() noexcept;

 private:
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
  bool finished_ = false;
  bool broken_ = false;
  std::unique_ptr<PostprocessWorkspace> workspace_;
};

}  // namespace m2f::cuda

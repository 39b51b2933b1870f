// Runs an emulated kernel launch (m2f/cuda/emulation.hpp) on the calling host thread. Threads of a
// block that meet at __syncthreads run as fibers, switched only at the barrier; a launch site whose
// first block never reaches a barrier runs its threads as plain calls. On x86-64 the fibers switch
// with six saved registers (a few nanoseconds); ucontext's swapcontext, used elsewhere, makes a
// system call per switch, which made the barrier kernels a hundred times slower. Launch checks
// follow CUDA's limits, so a configuration that a GPU refuses (a zero or too-large grid, too many
// threads) is refused here too.
// emulation.hpp first: its qualifiers must come before CUDA's headers
#include "m2f/cuda/emulation.hpp"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "emulation/runtime_state.hpp"

namespace m2f::emulation {
namespace {

constexpr std::size_t kFiberStackBytes = 64 * 1024;
constexpr unsigned kMaxThreadsPerBlock = 1024;

enum class FiberState : unsigned char { running, waiting, finished };

void fiber_main();

#if defined(__x86_64__)
// A suspended fiber is its stack pointer; the callee-saved registers (System V) sit on its stack.
// Floating-point control state is the same in every fiber (kernels never change it), so not saved.
struct FiberContext {
  void* stack_pointer = nullptr;
};
extern "C" void m2f_emulation_switch(void** save_stack_pointer, void* load_stack_pointer);
asm(R"(
  .text
  .p2align 4
  .globl m2f_emulation_switch
  .hidden m2f_emulation_switch
  .type m2f_emulation_switch, @function
m2f_emulation_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size m2f_emulation_switch, .-m2f_emulation_switch
)");

void start_fiber(FiberContext& fiber, char* stack, std::size_t bytes, FiberContext&) {
  auto* top = reinterpret_cast<std::uintptr_t*>(reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t{15});
  *--top = 0;  // fiber_main's return address slot: it never returns; keeps the ABI's entry alignment
  *--top = reinterpret_cast<std::uintptr_t>(&fiber_main);  // where the switch's ret lands
  for (int r = 0; r < 6; ++r) *--top = 0;  // rbp, rbx, r12-r15
  fiber.stack_pointer = top;
}
void switch_fiber(FiberContext& from, FiberContext& to) { m2f_emulation_switch(&from.stack_pointer, to.stack_pointer); }
#else
struct FiberContext {
  ucontext_t context{};
};
void start_fiber(FiberContext& fiber, char* stack, std::size_t bytes, FiberContext& scheduler) {
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = stack;
  fiber.context.uc_stack.ss_size = bytes;
  fiber.context.uc_link = &scheduler.context;
  makecontext(&fiber.context, fiber_main, 0);
}
void switch_fiber(FiberContext& from, FiberContext& to) { swapcontext(&from.context, &to.context); }
#endif

// The block now running on this host thread, when its threads are fibers.
struct FiberBlock {
  FiberContext scheduler;
  std::vector<FiberContext> contexts;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<KernelThread> threads;
  std::vector<FiberState> states;
  ThreadBody body = nullptr;
  const void* body_context = nullptr;
  int running = -1;
  bool barrier_seen = false;
};
// Not thread_local: launches hold launch_mutex, one at a time, and thread_local costs a call per use
// in a shared library.
std::mutex launch_mutex;
FiberBlock fiber_block;
bool in_fiber = false;
bool unsuspendable_barrier = false;

// Never returns: a finished fiber hands control back to the scheduler, which never resumes it.
void fiber_main() {
  FiberBlock& block = fiber_block;
  block.body(block.body_context);
  block.states[block.running] = FiberState::finished;
  switch_fiber(block.contexts[block.running], block.scheduler);
}

// Runs one block's threads as fibers, round after round, each round ending at a barrier that every
// thread has reached. Returns false if some threads finished while others wait at a barrier (CUDA
// leaves that undefined; on a GPU it hangs or corrupts the block's shared memory).
bool run_block_as_fibers(const std::vector<KernelThread>& threads, ThreadBody body, const void* context,
                         bool& barrier_seen) {
  FiberBlock& block = fiber_block;
  const std::size_t count = threads.size();
  block.contexts.resize(count);
  while (block.stacks.size() < count) block.stacks.emplace_back(new char[kFiberStackBytes]);
  block.threads = threads;
  block.states.assign(count, FiberState::running);
  block.body = body;
  block.body_context = context;
  block.barrier_seen = false;
  for (std::size_t t = 0; t < count; ++t)
    start_fiber(block.contexts[t], block.stacks[t].get(), kFiberStackBytes, block.scheduler);
  in_fiber = true;
  bool uniform = true;
  for (;;) {
    std::size_t finished = 0, waiting = 0;
    for (std::size_t t = 0; t < count; ++t) {
      if (block.states[t] == FiberState::finished) continue;
      block.states[t] = FiberState::running;
      block.running = static_cast<int>(t);
      current_thread = block.threads[t];
      switch_fiber(block.scheduler, block.contexts[t]);
    }
    for (FiberState s : block.states) (s == FiberState::finished ? finished : waiting) += 1;
    if (waiting == 0) break;
    if (finished != 0) {
      uniform = false;
      // let the waiting ones run on, so the block ends; the launch reports the failure
      for (FiberState& s : block.states)
        if (s == FiberState::waiting) s = FiberState::running;
    }
  }
  in_fiber = false;
  barrier_seen = block.barrier_seen;
  return uniform;
}

struct SiteRegistry {
  std::mutex mutex;
  std::unordered_map<const void*, bool> uses_barriers;  // absent: not yet learnt
};
SiteRegistry& sites() {
  static SiteRegistry* registry = new SiteRegistry;  // never destroyed: kernels may run at exit
  return *registry;
}

bool valid_configuration(dim3 grid, dim3 block) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || block.x > 1024 || block.y > 1024 || block.z > 64) return false;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return false;
  return grid.x <= 2147483647u && grid.y <= 65535 && grid.z <= 65535;
}

}  // namespace

void sync_block_threads() {
  if (!in_fiber) {
    // a launch site whose first block had no barrier reached one in a later block
    unsuspendable_barrier = true;
    return;
  }
  FiberBlock& block = fiber_block;
  block.barrier_seen = true;
  const int t = block.running;
  block.states[t] = FiberState::waiting;
  switch_fiber(block.contexts[t], block.scheduler);
}

void run_grid(const void* site, dim3 grid, dim3 block, cudaStream_t stream, ThreadBody body, const void* context) {
  if (!valid_configuration(grid, block)) {
    std::fprintf(stderr,
                 "m2f_edge CUDA emulator: launch refused, grid (%u, %u, %u) block (%u, %u, %u) is outside CUDA's "
                 "limits\n",
                 grid.x, grid.y, grid.z, block.x, block.y, block.z);
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  if (!stream_is_usable(stream)) {
    set_last_error(cudaErrorInvalidResourceHandle);
    return;
  }
  std::lock_guard<std::mutex> launch_lock(launch_mutex);
  int known = -1;  // -1 not learnt, 0 no barriers, 1 barriers
  {
    std::lock_guard<std::mutex> lock(sites().mutex);
    auto it = sites().uses_barriers.find(site);
    if (it != sites().uses_barriers.end()) known = it->second ? 1 : 0;
  }
  const KernelThread saved = current_thread;
  std::vector<KernelThread> threads;
  bool uniform_barriers = true;
  unsuspendable_barrier = false;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        KernelThread thread;
        thread.block_index = uint3{bx, by, bz};
        thread.block_dim = block;
        thread.grid_dim = grid;
        if (known == 0) {
          for (unsigned tz = 0; tz < block.z; ++tz)
            for (unsigned ty = 0; ty < block.y; ++ty)
              for (unsigned tx = 0; tx < block.x; ++tx) {
                thread.thread_index = uint3{tx, ty, tz};
                current_thread = thread;
                body(context);
              }
          continue;
        }
        threads.clear();
        for (unsigned tz = 0; tz < block.z; ++tz)
          for (unsigned ty = 0; ty < block.y; ++ty)
            for (unsigned tx = 0; tx < block.x; ++tx) {
              thread.thread_index = uint3{tx, ty, tz};
              threads.push_back(thread);
            }
        bool barrier_seen = false;
        uniform_barriers = run_block_as_fibers(threads, body, context, barrier_seen) && uniform_barriers;
        if (known == -1) {
          known = barrier_seen ? 1 : 0;
          std::lock_guard<std::mutex> lock(sites().mutex);
          sites().uses_barriers.emplace(site, barrier_seen);
        }
      }
  current_thread = saved;
  if (!uniform_barriers || unsuspendable_barrier) {
    std::fprintf(stderr,
                 "m2f_edge CUDA emulator: __syncthreads was not reached by every thread of a block (grid (%u, %u, "
                 "%u), block (%u, %u, %u)); CUDA leaves this undefined\n",
                 grid.x, grid.y, grid.z, block.x, block.y, block.z);
    set_last_error(cudaErrorLaunchFailure);
  }
}

}  // namespace m2f::emulation

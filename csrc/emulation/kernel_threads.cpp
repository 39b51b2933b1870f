// Runs an emulated kernel launch (emulation/emulation.hpp) on the calling host thread, one block
// after another. Each block starts its first thread as a fiber: if that thread reaches
// __syncthreads, the whole block runs as fibers switched at the barrier, else the other threads
// run as plain calls (CUDA requires a barrier to be reached by all of a block's threads or by none,
// so a later thread reaching one is reported as a divergent barrier). On x86-64 the fibers switch
// with six saved registers; ucontext's swapcontext, used elsewhere, makes a system call per switch.
// Launch checks follow CUDA's grid and block dimension limits (not its per-kernel resource limits:
// registers and shared memory are not modelled).
//
// A block's threads run in index order, or from last to first with M2F_EMULATION_REVERSE_THREADS=1:
// a read of another thread's write with no barrier between them then sees the old value in one of
// the two orders, as some schedule on a GPU would.
// emulation.hpp first: its qualifiers must come before CUDA's headers
#include "emulation/emulation.hpp"

#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#include "emulation/runtime_state.hpp"

namespace m2f::emulation {
namespace {

constexpr std::size_t kFiberStackBytes = 64 * 1024;
constexpr unsigned kMaxThreadsPerBlock = 1024;

// ready: runs in the current round; waiting: at a barrier until every thread is.
enum class FiberState : unsigned char { ready, waiting, finished };

void fiber_main();

#if defined(__x86_64__)
// A suspended fiber is its stack pointer; the callee-saved registers (System V) sit on its stack.
// Floating-point control state is the same in every fiber (kernels never change it), so not saved.
// This file is built without CET (-fcf-protection=none): the switch returns onto another stack.
struct FiberContext {
  void* stack_pointer = nullptr;
};
extern "C" void m2f_emulation_switch(void** save_stack_pointer, void* load_stack_pointer);
asm(R"(
  .pushsection .text
  .globl m2f_emulation_switch
  .hidden m2f_emulation_switch
  .type m2f_emulation_switch, @function
  .p2align 4
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
  .popsection
)");

void start_fiber(FiberContext& fiber, char* stack, std::size_t bytes, FiberContext&) {
  auto* top = reinterpret_cast<std::uintptr_t*>(reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t{15});
  *--top = 0;  // fiber_main's return address slot: it never returns; keeps the ABI's entry alignment
  *--top = reinterpret_cast<std::uintptr_t>(&fiber_main);  // where the switch's ret lands
  for (int r = 0; r < 6; ++r) *--top = 0;                  // rbp, rbx, r12-r15
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

// A fiber's stack, with an inaccessible page below it: an overflow faults instead of corrupting
// the heap.
class FiberStack {
 public:
  FiberStack() {
    guard_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    void* memory = mmap(nullptr, guard_ + kFiberStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    base_ = static_cast<char*>(memory);
    mprotect(base_, guard_, PROT_NONE);
  }
  ~FiberStack() {
    if (base_) munmap(base_, guard_ + kFiberStackBytes);
  }
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  char* usable() const { return base_ + guard_; }

 private:
  char* base_ = nullptr;
  std::size_t guard_ = 0;
};

// The block now running. Not thread_local: launches hold launch_mutex(), one at a time, and a
// thread_local costs a function call per use in a shared library.
struct FiberBlock {
  FiberContext scheduler;
  std::vector<FiberContext> contexts;
  std::vector<std::unique_ptr<FiberStack>> stacks;
  std::vector<KernelThread> threads;
  std::vector<FiberState> states;
  std::vector<int> barrier_lines;  // where each waiting thread waits
  ThreadBody body = nullptr;
  const void* body_context = nullptr;
  unsigned running = 0;
  bool in_fiber = false;
  bool divergent = false;  // a barrier not reached by all threads of a block, or not the same one
};
// Never destroyed: a launch may come from another object's destructor at exit.
FiberBlock& fiber_block() {
  static FiberBlock* block = new FiberBlock;
  return *block;
}
std::mutex& launch_mutex() {
  static std::mutex* mutex = new std::mutex;
  return *mutex;
}

bool reverse_thread_order() {
  static const bool reverse = [] {
    const char* value = std::getenv("M2F_EMULATION_REVERSE_THREADS");
    return value != nullptr && std::strcmp(value, "1") == 0;
  }();
  return reverse;
}

// Never returns: a finished fiber hands control back to the scheduler, which never resumes it.
void fiber_main() {
  FiberBlock& block = fiber_block();
  block.body(block.body_context);
  block.states[block.running] = FiberState::finished;
  switch_fiber(block.contexts[block.running], block.scheduler);
}

void resume(FiberBlock& block, unsigned t) {
  block.running = t;
  current_thread = block.threads[t];
  block.in_fiber = true;
  switch_fiber(block.scheduler, block.contexts[t]);
  block.in_fiber = false;
}

void run_block(const KernelThread& base, ThreadBody body, const void* context) {
  FiberBlock& block = fiber_block();
  const dim3 dims = base.block_dim;
  const unsigned count = dims.x * dims.y * dims.z;
  block.threads.resize(count);
  for (unsigned t = 0; t < count; ++t) {
    block.threads[t] = base;
    block.threads[t].thread_index = uint3{t % dims.x, (t / dims.x) % dims.y, t / (dims.x * dims.y)};
  }
  const bool reverse = reverse_thread_order();
  auto nth = [&](unsigned k) { return reverse ? count - 1 - k : k; };
  block.body = body;
  block.body_context = context;
  block.contexts.resize(count);
  while (block.stacks.size() < count) block.stacks.push_back(std::make_unique<FiberStack>());
  block.states.assign(count, FiberState::ready);
  block.barrier_lines.assign(count, 0);

  // The first thread as a fiber: does this block meet at barriers?
  const unsigned first = nth(0);
  start_fiber(block.contexts[first], block.stacks[first]->usable(), kFiberStackBytes, block.scheduler);
  resume(block, first);
  if (block.states[first] == FiberState::finished) {
    for (unsigned k = 1; k < count; ++k) {  // no barrier: plain calls (one reached now is divergent)
      current_thread = block.threads[nth(k)];
      body(context);
    }
    return;
  }
  for (unsigned k = 1; k < count; ++k)
    start_fiber(block.contexts[nth(k)], block.stacks[nth(k)]->usable(), kFiberStackBytes, block.scheduler);
  for (;;) {  // rounds: every ready thread runs to the next barrier or to its end
    for (unsigned k = 0; k < count; ++k)
      if (block.states[nth(k)] == FiberState::ready) resume(block, nth(k));
    unsigned finished = 0, waiting = 0;
    int line = -1;
    for (unsigned t = 0; t < count; ++t) {
      if (block.states[t] == FiberState::finished) {
        ++finished;
        continue;
      }
      ++waiting;
      if (line == -1) line = block.barrier_lines[t];
      if (block.barrier_lines[t] != line) block.divergent = true;  // different __syncthreads
    }
    if (waiting == 0) return;
    if (finished != 0) block.divergent = true;  // some ended, the others wait: undefined in CUDA
    for (FiberState& s : block.states)          // release the barrier (and let a divergent block end)
      if (s == FiberState::waiting) s = FiberState::ready;
  }
}

bool valid_configuration(dim3 grid, dim3 block) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || block.x > 1024 || block.y > 1024 || block.z > 64) return false;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return false;
  return grid.x <= 2147483647u && grid.y <= 65535 && grid.z <= 65535;
}

}  // namespace

void sync_block_threads(int line) {
  FiberBlock& block = fiber_block();
  if (!block.in_fiber) {  // a plain call: the block's first thread finished without this barrier
    block.divergent = true;
    return;
  }
  const unsigned t = block.running;
  block.states[t] = FiberState::waiting;
  block.barrier_lines[t] = line;
  switch_fiber(block.contexts[t], block.scheduler);
}

namespace {

void execute_grid(dim3 grid, dim3 block_dim, ThreadBody body, const void* context) {
  std::lock_guard<std::mutex> lock(launch_mutex());
  FiberBlock& fibers = fiber_block();
  fibers.divergent = false;
  const KernelThread saved = current_thread;
  KernelThread base;
  base.block_dim = block_dim;
  base.grid_dim = grid;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        base.block_index = uint3{bx, by, bz};
        run_block(base, body, context);
      }
  current_thread = saved;
  if (fibers.divergent) {
    std::fprintf(stderr,
                 "m2f_edge CUDA emulator: a __syncthreads was not reached by every thread of a block, or threads "
                 "waited at different ones (grid (%u, %u, %u), block (%u, %u, %u)); CUDA leaves this undefined\n",
                 grid.x, grid.y, grid.z, block_dim.x, block_dim.y, block_dim.z);
    record_kernel_failure(cudaErrorLaunchFailure);
  }
}

}  // namespace

void run_grid(dim3 grid, dim3 block_dim, cudaStream_t stream, ThreadBody body, std::shared_ptr<const void> owner) {
  if (const cudaError_t refused = launch_refusal(stream); refused != cudaSuccess) {
    set_last_error(refused);
    return;
  }
  if (!valid_configuration(grid, block_dim)) {
    std::fprintf(stderr,
                 "m2f_edge CUDA emulator: launch refused, grid (%u, %u, %u) block (%u, %u, %u) is outside CUDA's "
                 "limits\n",
                 grid.x, grid.y, grid.z, block_dim.x, block_dim.y, block_dim.z);
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  enqueue(stream, [grid, block_dim, body, owner = std::move(owner)] { execute_grid(grid, block_dim, body, owner.get()); });
}

}  // namespace m2f::emulation

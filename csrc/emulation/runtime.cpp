// The CUDA runtime of the emulation build (see emulation/emulation.hpp): the calls m2f_edge makes,
// with the declarations of the real cuda_runtime_api.h, done on the CPU. Only those calls, CUDA
// graphs and stream capture included (for the TensorRT layer run against the stand-in of
// emulation/tensorrt/): work enqueued on a capturing stream is recorded instead of queued, and a
// launched graph enqueues it again, with the kernel arguments of the capture, as on a GPU. Capture
// follows cudaStreamCaptureModeThreadLocal's rules for the capturing thread: synchronising the
// capturing stream or the device, cudaMalloc, cudaFree and blocking copies are refused and
// invalidate the capture. Events recorded inside a capture are not emulated (refused).
// Work waits in its stream until something waits for it (below). Where CUDA is strict, so is this:
// a copy's device side must lie inside one allocation and its host side outside device memory,
// handles must be live, fresh device memory holds garbage (0xCD bytes) rather than zeros, and a
// launch outside CUDA's limits is refused. Not checked: that the pointers a kernel is given are
// device memory (the bindings check their inputs).
//
// Environment:
//   M2F_EMULATED_GPU=discrete (default) | integrated (a Jetson-like device: integrated, can map
//     host memory) | none (device queries, allocations, streams, events and launches fail with
//     cudaErrorNoDevice)
//   M2F_EMULATED_GPU_MEMORY=BYTES: device memory size (default 8 GiB), for out-of-memory paths
//   M2F_EMULATION_IMMEDIATE=1: work runs when it is enqueued. By default it waits in its stream
//     until something waits for it (a stream or event synchronisation, a blocking copy, a free,
//     another stream's wait on an event), so that reading results before synchronising shows stale
//     bytes, as on a GPU. Streams follow CUDA's ordering: in order within a stream, the legacy
//     default stream ordered with blocking streams, non-blocking streams with nothing but the events
//     they wait for.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "emulation/runtime_state.hpp"

// Work enqueued and not yet run, each with its place in the global order.
struct EnqueuedWork {
  unsigned long long sequence;
  std::function<void()> run;
};
struct CUstream_st {
  unsigned flags = 0;
  std::deque<EnqueuedWork> pending;
  // Stream capture: while capturing, enqueued work goes into `captured` instead of `pending`.
  bool capturing = false;
  bool capture_invalidated = false;
  std::vector<std::function<void()>> captured;
};
struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};
struct CUevent_st {
  unsigned flags = 0;
  bool recorded = false;  // its record has run
  std::chrono::steady_clock::time_point time;
  cudaStream_t stream = nullptr;  // where and after what its latest record was enqueued
  unsigned long long sequence = 0;
  unsigned long long generation = 0;  // of the latest record: an older one still queued writes nothing
};

namespace m2f::emulation {
namespace {

enum class Memory { device, pinned_host, pageable };  // pageable: not allocated here

struct Allocation {
  std::size_t size;
  Memory kind;
};

struct Runtime {
  std::mutex mutex;
  std::map<const char*, Allocation> allocations;  // by start address
  std::set<cudaStream_t> streams;
  std::set<cudaEvent_t> events;
  std::size_t device_bytes_in_use = 0;
};
Runtime& runtime() {
  static Runtime* state = new Runtime;  // never destroyed: frees may come from other objects' destructors at exit
  return *state;
}

thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;
// The streams this thread is capturing (cudaStreamCaptureModeThreadLocal: only its own calls are checked).
thread_local std::vector<CUstream_st*> capturing_here;

cudaError_t fail(cudaError_t status) {
  set_last_error(status);
  return status;
}

std::string emulated_kind() {
  const char* value = std::getenv("M2F_EMULATED_GPU");
  return value && *value ? value : "discrete";
}

bool no_device() { return emulated_kind() == "none"; }

// M2F_EMULATED_GPU_COUNT: how many devices there are (default 1), all alike, sharing one memory:
// enough to check that code sets the device it means before using it.
int device_count() {
  const char* value = std::getenv("M2F_EMULATED_GPU_COUNT");
  const int count = value && *value ? std::atoi(value) : 1;
  return count > 0 ? count : 1;
}

std::size_t device_memory_size() {
  const char* value = std::getenv("M2F_EMULATED_GPU_MEMORY");
  if (value && *value) return static_cast<std::size_t>(std::strtoull(value, nullptr, 10));
  return std::size_t{8} << 30;
}

// The allocation holding [p, p + bytes), or nullptr. Caller holds the mutex.
const Allocation* find_allocation(const void* p, std::size_t bytes, bool& inside) {
  inside = false;
  const char* c = static_cast<const char*>(p);
  auto& allocations = runtime().allocations;
  auto it = allocations.upper_bound(c);
  if (it == allocations.begin()) return nullptr;
  --it;
  const std::size_t offset = static_cast<std::size_t>(c - it->first);
  if (offset >= std::max<std::size_t>(it->second.size, 1)) return nullptr;
  inside = bytes <= it->second.size - offset;
  return &it->second;
}

// Device-accessible memory: device allocations and page-locked host memory (mapped everywhere under
// unified addressing). Pageable host memory is not.
cudaError_t check_device_side(const void* p, std::size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(runtime().mutex);
  bool inside = false;
  if (find_allocation(p, bytes, inside) == nullptr) return cudaErrorInvalidValue;
  return inside ? cudaSuccess : cudaErrorInvalidValue;
}

// The host side of a copy that names its kinds: not device memory (page-locked host memory is host
// memory too). `any_kind`: cudaMemcpyDefault, where unified addressing tells the kinds apart.
cudaError_t check_host_side(const void* p, std::size_t bytes, bool any_kind) {
  if (bytes == 0) return cudaSuccess;
  if (p == nullptr) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(runtime().mutex);
  bool inside = false;
  const Allocation* a = find_allocation(p, bytes, inside);
  if (a == nullptr) return cudaSuccess;
  if (!inside || (!any_kind && a->kind == Memory::device)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

cudaError_t check_copy(void* dst, const void* src, std::size_t count, cudaMemcpyKind kind) {
  cudaError_t status = cudaSuccess;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind != cudaMemcpyHostToHost && kind != cudaMemcpyDefault && !dst_device && !src_device)
    return fail(cudaErrorInvalidMemcpyDirection);
  const bool any_kind = kind == cudaMemcpyDefault;
  if ((status = dst_device ? check_device_side(dst, count) : check_host_side(dst, count, any_kind)) != cudaSuccess)
    return fail(status);
  if ((status = src_device ? check_device_side(src, count) : check_host_side(src, count, any_kind)) != cudaSuccess)
    return fail(status);
  return cudaSuccess;
}

cudaError_t allocate(void** p, std::size_t size, Memory kind) {
  if (p == nullptr) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (no_device()) return fail(cudaErrorNoDevice);
  if (size == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(runtime().mutex);
  if (kind == Memory::device && size > device_memory_size() - std::min(device_memory_size(), runtime().device_bytes_in_use))
    return fail(cudaErrorMemoryAllocation);
  // The exact size, not rounded up to the alignment as a GPU allocator does: under AddressSanitizer
  // (tools/run_emulated_gpu_tests.sh with M2F_EMULATION_SANITIZE=1) a kernel reading one byte past
  // its buffer is reported, which a GPU's allocation granularity would hide.
  void* memory = nullptr;
  if (posix_memalign(&memory, 256, size) != 0) return fail(cudaErrorMemoryAllocation);
  std::memset(memory, 0xCD, size);
  runtime().allocations.emplace(static_cast<const char*>(memory), Allocation{size, kind});
  if (kind == Memory::device) runtime().device_bytes_in_use += size;
  *p = memory;
  return cudaSuccess;
}

cudaError_t release(void* p, Memory kind) {
  if (p == nullptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(runtime().mutex);
  auto it = runtime().allocations.find(static_cast<const char*>(p));
  if (it == runtime().allocations.end() || it->second.kind != kind) return fail(cudaErrorInvalidValue);
  if (kind == Memory::device) runtime().device_bytes_in_use -= it->second.size;
  runtime().allocations.erase(it);
  std::free(p);
  return cudaSuccess;
}

// Streams and events: live from create to destroy; a stale or foreign handle is refused.
template <typename Handle>
cudaError_t register_handle(std::set<Handle> Runtime::*live, Handle* out, Handle handle) {
  if (no_device()) {
    delete handle;
    return fail(cudaErrorNoDevice);
  }
  *out = handle;
  std::lock_guard<std::mutex> lock(runtime().mutex);
  (runtime().*live).insert(handle);
  return cudaSuccess;
}


bool stream_is_usable(cudaStream_t stream) noexcept {
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) return true;
  std::lock_guard<std::mutex> lock(runtime().mutex);
  return runtime().streams.count(stream) != 0;
}

bool event_is_live(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(runtime().mutex);
  return runtime().events.count(event) != 0;
}

// ---- stream order (deferred unless M2F_EMULATION_IMMEDIATE=1) ----------------------------------------------------------

bool deferred() {
  static const bool on = [] {
    const char* value = std::getenv("M2F_EMULATION_IMMEDIATE");
    return value == nullptr || std::strcmp(value, "1") != 0;
  }();
  return on;
}

// Recursive: running one stream's work may first run the work it waits for on others.
std::recursive_mutex& order_mutex() {
  static std::recursive_mutex* mutex = new std::recursive_mutex;
  return *mutex;
}
unsigned long long next_sequence = 0;  // under order_mutex()
std::atomic<cudaError_t> sticky_error{cudaSuccess};

// What a synchronisation returns once the work it waited for has run.
cudaError_t synchronised() {
  const cudaError_t status = sticky_error.load();
  return status == cudaSuccess ? cudaSuccess : fail(status);
}

// What memory `p` points into. Pageable host memory CUDA copies from at the call, and into before
// returning.
Memory memory_at(const void* p) {
  std::lock_guard<std::mutex> lock(runtime().mutex);
  bool inside = false;
  const Allocation* a = find_allocation(p, 1, inside);
  return a != nullptr ? a->kind : Memory::pageable;
}
CUstream_st& legacy_stream() {
  static CUstream_st* stream = new CUstream_st;
  return *stream;
}
// The per-thread default stream is taken as the legacy one: m2f_edge never asks for it.
CUstream_st* stream_state(cudaStream_t stream) {
  return (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) ? &legacy_stream() : stream;
}
std::vector<CUstream_st*> blocking_streams() {
  std::lock_guard<std::mutex> lock(runtime().mutex);
  std::vector<CUstream_st*> found;
  for (cudaStream_t s : runtime().streams)
    if (!(s->flags & cudaStreamNonBlocking)) found.push_back(s);
  return found;
}

// Runs `stream`'s work enqueued up to `sequence`, each piece after what CUDA orders it behind.
void run_until(CUstream_st* stream, unsigned long long sequence) {
  std::lock_guard<std::recursive_mutex> lock(order_mutex());
  while (!stream->pending.empty() && stream->pending.front().sequence <= sequence) {
    EnqueuedWork work = std::move(stream->pending.front());
    stream->pending.pop_front();
    if (stream == &legacy_stream()) {
      for (CUstream_st* other : blocking_streams()) run_until(other, work.sequence);
    } else if (!(stream->flags & cudaStreamNonBlocking)) {
      run_until(&legacy_stream(), work.sequence);
    }
    work.run();
  }
}

void run_all() {
  std::lock_guard<std::recursive_mutex> lock(order_mutex());
  std::vector<CUstream_st*> streams;
  {
    std::lock_guard<std::mutex> registry(runtime().mutex);
    streams.assign(runtime().streams.begin(), runtime().streams.end());
  }
  streams.push_back(&legacy_stream());
  for (CUstream_st* s : streams) run_until(s, ~0ull);
}

// A call that CUDA refuses while this thread captures (cudaStreamCaptureModeThreadLocal): it
// invalidates every capture of this thread and returns the error to give back, else cudaSuccess.
cudaError_t refused_during_capture() {
  if (capturing_here.empty()) return cudaSuccess;
  for (CUstream_st* s : capturing_here) s->capture_invalidated = true;
  return fail(cudaErrorStreamCaptureUnsupported);
}

// Runs `work` now, or queues it on `stream` in deferred mode (records it, while the stream
// captures); returns its sequence number.
unsigned long long enqueue_work(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::recursive_mutex> lock(order_mutex());
  const unsigned long long sequence = ++next_sequence;
  if (stream_state(stream)->capturing) {
    stream_state(stream)->captured.push_back(std::move(work));
    return sequence;
  }
  if (!deferred()) {
    work();
    return sequence;
  }
  stream_state(stream)->pending.push_back(EnqueuedWork{sequence, std::move(work)});
  return sequence;
}

}  // namespace

void enqueue(cudaStream_t stream, std::function<void()> work) { enqueue_work(stream, std::move(work)); }

void record_kernel_failure(cudaError_t status) noexcept {
  cudaError_t expected = cudaSuccess;
  sticky_error.compare_exchange_strong(expected, status);
  set_last_error(status);
}

void set_last_error(cudaError_t status) noexcept {
  if (status != cudaSuccess) last_error = status;
}

cudaError_t launch_refusal(cudaStream_t stream) noexcept {
  if (no_device()) return cudaErrorNoDevice;
  return stream_is_usable(stream) ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

}  // namespace m2f::emulation

using m2f::emulation::fail;
using m2f::emulation::runtime;
using m2f::emulation::stream_is_usable;

// ---- errors ----------------------------------------------------------------------------------------

cudaError_t cudaGetLastError(void) { return std::exchange(m2f::emulation::last_error, cudaSuccess); }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    default: return "unrecognized error code";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalState: return "the resource is not in a valid state to perform the operation";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error";
  }
}

// ---- devices ---------------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  *count = 0;
  if (m2f::emulation::no_device()) return fail(cudaErrorNoDevice);
  *count = m2f::emulation::device_count();
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue);
  *device = m2f::emulation::current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (m2f::emulation::no_device()) return fail(cudaErrorNoDevice);
  if (device < 0 || device >= m2f::emulation::device_count()) return fail(cudaErrorInvalidDevice);
  m2f::emulation::current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return fail(cudaErrorInvalidValue);
  if (m2f::emulation::no_device()) return fail(cudaErrorNoDevice);
  if (device < 0 || device >= m2f::emulation::device_count()) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  const bool integrated = m2f::emulation::emulated_kind() == "integrated";
  const std::string name = std::string("m2f_edge CUDA emulator (kernels on the CPU, ") +
                           (integrated ? "integrated" : "discrete") + " GPU model)";
  std::strncpy(prop->name, name.c_str(), sizeof prop->name - 1);
  prop->totalGlobalMem = m2f::emulation::device_memory_size();
  prop->major = integrated ? 8 : 9;
  prop->minor = integrated ? 7 : 0;
  prop->multiProcessorCount = 1;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->warpSize = 32;
  prop->integrated = integrated ? 1 : 0;
  prop->canMapHostMemory = 1;
  prop->unifiedAddressing = 1;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  if (version == nullptr) return fail(cudaErrorInvalidValue);
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  if (const cudaError_t refused = m2f::emulation::refused_during_capture()) return refused;
  m2f::emulation::run_all();
  return m2f::emulation::synchronised();
}

// ---- memory ----------------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** p, size_t size) {
  if (const cudaError_t refused = m2f::emulation::refused_during_capture()) return refused;
  return m2f::emulation::allocate(p, size, m2f::emulation::Memory::device);
}
// Frees synchronise the device, as in CUDA: no queued work may still use the memory.
cudaError_t cudaFree(void* p) {
  if (const cudaError_t refused = m2f::emulation::refused_during_capture()) return refused;
  if (p) m2f::emulation::run_all();
  return m2f::emulation::release(p, m2f::emulation::Memory::device);
}
cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int flags) {
  if (flags & ~0x7u) return fail(cudaErrorInvalidValue);
  return m2f::emulation::allocate(p, size, m2f::emulation::Memory::pinned_host);
}
cudaError_t cudaFreeHost(void* p) {
  if (p) m2f::emulation::run_all();
  return m2f::emulation::release(p, m2f::emulation::Memory::pinned_host);
}

cudaError_t cudaHostGetDevicePointer(void** device_pointer, void* host_pointer, unsigned int flags) {
  if (device_pointer == nullptr || flags != 0) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(runtime().mutex);
  bool inside = false;
  const m2f::emulation::Allocation* a = m2f::emulation::find_allocation(host_pointer, 1, inside);
  if (a == nullptr || a->kind != m2f::emulation::Memory::pinned_host) return fail(cudaErrorInvalidValue);
  *device_pointer = host_pointer;
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* p) {
  if (attributes == nullptr) return fail(cudaErrorInvalidValue);
  *attributes = cudaPointerAttributes{};
  attributes->type = cudaMemoryTypeUnregistered;
  attributes->device = -2;
  std::lock_guard<std::mutex> lock(runtime().mutex);
  bool inside = false;
  const m2f::emulation::Allocation* a = m2f::emulation::find_allocation(p, 1, inside);
  if (a == nullptr) return cudaSuccess;
  attributes->device = 0;
  attributes->devicePointer = const_cast<void*>(p);
  if (a->kind == m2f::emulation::Memory::device) {
    attributes->type = cudaMemoryTypeDevice;
  } else {
    attributes->type = cudaMemoryTypeHost;
    attributes->hostPointer = const_cast<void*>(p);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (const cudaError_t refused = m2f::emulation::refused_during_capture()) return refused;
  const cudaError_t status = m2f::emulation::check_copy(dst, src, count, kind);
  if (status != cudaSuccess) return status;
  // on the legacy default stream, so after all earlier work of it and of the blocking streams
  m2f::emulation::run_until(&m2f::emulation::legacy_stream(), ~0ull);
  for (CUstream_st* s : m2f::emulation::blocking_streams()) m2f::emulation::run_until(s, ~0ull);
  if (count) std::memmove(dst, src, count);
  return m2f::emulation::synchronised();
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  if (!stream_is_usable(stream)) return fail(cudaErrorInvalidResourceHandle);
  const cudaError_t status = m2f::emulation::check_copy(dst, src, count, kind);
  if (status != cudaSuccess || count == 0) return status;
  std::function<void()> work = [dst, src, count] { std::memmove(dst, src, count); };
  const m2f::emulation::Memory to = m2f::emulation::memory_at(dst), from = m2f::emulation::memory_at(src);
  if (from == m2f::emulation::Memory::pageable) {  // CUDA stages it at the call
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + count);
    work = [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); };
  }
  // Into pageable memory, and between two host buffers, CUDA returns once the copy is done: in the
  // stream's order, after the work it waits for.
  const bool synchronous = to == m2f::emulation::Memory::pageable ||
                           (to != m2f::emulation::Memory::device && from != m2f::emulation::Memory::device);
  if (synchronous && m2f::emulation::stream_state(stream)->capturing) {
    m2f::emulation::stream_state(stream)->capture_invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  const unsigned long long sequence = m2f::emulation::enqueue_work(stream, std::move(work));
  if (!synchronous) return cudaSuccess;
  m2f::emulation::run_until(m2f::emulation::stream_state(stream), sequence);
  return m2f::emulation::synchronised();
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream) {
  if (!stream_is_usable(stream)) return fail(cudaErrorInvalidResourceHandle);
  const cudaError_t status = m2f::emulation::check_device_side(p, count);
  if (status != cudaSuccess) return fail(status);
  if (count) m2f::emulation::enqueue(stream, [p, value, count] { std::memset(p, value, count); });
  return cudaSuccess;
}

// ---- streams and events ----------------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  if (stream == nullptr || (flags & ~1u)) return fail(cudaErrorInvalidValue);
  return m2f::emulation::register_handle(&m2f::emulation::Runtime::streams, stream, new CUstream_st{flags, {}, false, false, {}});
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }

// CUDA finishes a destroyed stream's work after the call returns; here it runs first. Its
// bookkeeping is kept (never freed): events recorded on it and other streams' waits still refer to it.
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  if (stream == nullptr || !stream_is_usable(stream)) return fail(cudaErrorInvalidResourceHandle);
  m2f::emulation::run_until(m2f::emulation::stream_state(stream), ~0ull);
  std::lock_guard<std::mutex> registry(runtime().mutex);
  runtime().streams.erase(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (!stream_is_usable(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (m2f::emulation::stream_state(stream)->capturing) {
    m2f::emulation::stream_state(stream)->capture_invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  m2f::emulation::run_until(m2f::emulation::stream_state(stream), ~0ull);
  return m2f::emulation::synchronised();
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  if (!stream_is_usable(stream) || !m2f::emulation::event_is_live(event)) return fail(cudaErrorInvalidResourceHandle);
  if (flags != 0 && flags != 1) return fail(cudaErrorInvalidValue);
  // waits for the event's latest record as of now (none: nothing to wait for)
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  if (event->sequence != 0) {
    CUstream_st* recorded_on = m2f::emulation::stream_state(event->stream);
    const unsigned long long sequence = event->sequence;
    m2f::emulation::enqueue(stream, [recorded_on, sequence] { m2f::emulation::run_until(recorded_on, sequence); });
  }
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (event == nullptr || (flags & ~0x7u)) return fail(cudaErrorInvalidValue);
  return m2f::emulation::register_handle(&m2f::emulation::Runtime::events, event,
                                         new CUevent_st{flags, false, {}, nullptr, 0, 0});
}

// Runs the work up to the event's latest record.
static void run_until_event(cudaEvent_t event) {
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  if (event->sequence != 0) m2f::emulation::run_until(m2f::emulation::stream_state(event->stream), event->sequence);
}

// Its records still queued, on any stream, refer to it: they run first (CUDA would run them later).
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  if (m2f::emulation::event_is_live(event)) m2f::emulation::run_all();
  std::lock_guard<std::mutex> registry(runtime().mutex);
  if (runtime().events.erase(event) == 0) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!stream_is_usable(stream) || !m2f::emulation::event_is_live(event)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  if (m2f::emulation::stream_state(stream)->capturing) {  // an event node: not emulated
    m2f::emulation::stream_state(stream)->capture_invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  event->recorded = false;
  event->stream = stream;
  const unsigned long long generation = ++event->generation;
  event->sequence = m2f::emulation::enqueue_work(stream, [event, generation] {
    if (event->generation != generation) return;  // recorded again since
    event->recorded = true;
    event->time = std::chrono::steady_clock::now();
  });
  return cudaSuccess;
}

// Completes the work the event waits for: a GPU would get there on its own, so polling loops end.
cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (!m2f::emulation::event_is_live(event)) return fail(cudaErrorInvalidResourceHandle);
  run_until_event(event);
  return m2f::emulation::synchronised();
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) { return cudaEventQuery(event); }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  if (!m2f::emulation::event_is_live(start) || !m2f::emulation::event_is_live(end) || start->sequence == 0 ||
      end->sequence == 0 || ((start->flags | end->flags) & cudaEventDisableTiming))
    return fail(cudaErrorInvalidResourceHandle);
  if (!start->recorded || !end->recorded) return fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data) {
  if (fn == nullptr) return fail(cudaErrorInvalidValue);
  if (const cudaError_t refused = m2f::emulation::launch_refusal(stream)) return fail(refused);
  m2f::emulation::enqueue(stream, [fn, user_data] { fn(user_data); });
  return cudaSuccess;
}

// ---- stream capture and graphs ---------------------------------------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  if (!stream_is_usable(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (mode != cudaStreamCaptureModeThreadLocal)
    return fail(cudaErrorNotSupported);  // the only mode m2f_edge uses, the only one emulated
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  CUstream_st* s = m2f::emulation::stream_state(stream);
  if (s == &m2f::emulation::legacy_stream() || s->capturing) return fail(cudaErrorStreamCaptureUnsupported);
  s->capturing = true;
  s->capture_invalidated = false;
  s->captured.clear();
  m2f::emulation::capturing_here.push_back(s);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status) {
  if (status == nullptr) return fail(cudaErrorInvalidValue);
  if (!stream_is_usable(stream)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  const CUstream_st* s = m2f::emulation::stream_state(stream);
  *status = !s->capturing ? cudaStreamCaptureStatusNone
                          : s->capture_invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (graph == nullptr) return fail(cudaErrorInvalidValue);
  *graph = nullptr;
  if (!stream_is_usable(stream)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  CUstream_st* s = m2f::emulation::stream_state(stream);
  if (!s->capturing) return fail(cudaErrorIllegalState);
  auto& mine = m2f::emulation::capturing_here;
  const auto it = std::find(mine.begin(), mine.end(), s);
  if (it == mine.end()) return fail(cudaErrorStreamCaptureWrongThread);
  mine.erase(it);
  s->capturing = false;
  std::vector<std::function<void()>> work = std::move(s->captured);
  s->captured.clear();
  if (s->capture_invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  *graph = new CUgraph_st{std::move(work)};
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  if (exec == nullptr || graph == nullptr || flags != 0) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}

// Enqueues the captured work again, each piece with what it captured (kernel arguments, addresses).
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return fail(cudaErrorInvalidValue);
  if (const cudaError_t refused = m2f::emulation::launch_refusal(stream)) return fail(refused);
  std::lock_guard<std::recursive_mutex> lock(m2f::emulation::order_mutex());
  if (m2f::emulation::stream_state(stream)->capturing) return fail(cudaErrorNotSupported);  // child graphs: not emulated
  for (const auto& work : exec->work) m2f::emulation::enqueue(stream, work);
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  if (graph == nullptr) return fail(cudaErrorInvalidValue);
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  if (exec == nullptr) return fail(cudaErrorInvalidValue);
  delete exec;
  return cudaSuccess;
}

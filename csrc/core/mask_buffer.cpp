// The recycling pool behind MaskBuffer.
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include "m2f/postprocess.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace m2f {
namespace {

constexpr std::size_t kMaxPooled = 4;                       // free buffers kept
constexpr std::size_t kMaxPooledBytes = std::size_t{256} << 20;
constexpr std::size_t kHugeAlign = std::size_t{2} << 20;    // transparent huge page size

struct Pool {
  std::mutex mutex;
  struct Entry {
    std::uint8_t* data;
    std::size_t capacity;
  };
  std::vector<Entry> free;  // oldest first
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: buffers may be released during interpreter exit
  return *p;
}

std::uint8_t* fresh(std::size_t capacity) {
  void* p = nullptr;
  if (capacity >= kHugeAlign) {
    if (posix_memalign(&p, kHugeAlign, capacity) != 0) p = nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // fewer, larger page faults the first time the buffer is written (a hint; errors ignored)
    if (p) (void)madvise(p, capacity, MADV_HUGEPAGE);
#endif
  } else {
    p = std::malloc(capacity == 0 ? 1 : capacity);
  }
  if (!p) throw std::bad_alloc();
  return static_cast<std::uint8_t*>(p);
}

}  // namespace

MaskBuffer MaskBuffer::allocate(std::size_t bytes) {
  MaskBuffer b;
  b.size_ = bytes;
  {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    // the smallest pooled buffer that fits without wasting more than half of it
    std::size_t best = p.free.size();
    for (std::size_t i = 0; i < p.free.size(); ++i) {
      const std::size_t c = p.free[i].capacity;
      if (c >= bytes && c / 2 <= bytes && (best == p.free.size() || c < p.free[best].capacity)) best = i;
    }
    if (best < p.free.size()) {
      b.data_ = p.free[best].data;
      b.capacity_ = p.free[best].capacity;
      p.free.erase(p.free.begin() + static_cast<std::ptrdiff_t>(best));
      return b;
    }
  }
  b.capacity_ = bytes;
  b.data_ = fresh(bytes);
  return b;
}

MaskBuffer::MaskBuffer(MaskBuffer&& other) noexcept
    : data_(other.data_), size_(other.size_), capacity_(other.capacity_) {
  other.data_ = nullptr;
  other.size_ = other.capacity_ = 0;
}

MaskBuffer& MaskBuffer::operator=(MaskBuffer&& other) noexcept {
  if (this != &other) {
    MaskBuffer dying(std::move(*this));
    data_ = other.data_;
    size_ = other.size_;
    capacity_ = other.capacity_;
    other.data_ = nullptr;
    other.size_ = other.capacity_ = 0;
  }
  return *this;
}

MaskBuffer::~MaskBuffer() {
  if (!data_) return;
  if (capacity_ <= kMaxPooledBytes) {
    try {
      Pool& p = pool();
      std::lock_guard<std::mutex> lock(p.mutex);
      p.free.push_back({data_, capacity_});
      std::size_t total = 0;
      for (auto& e : p.free) total += e.capacity;
      while (p.free.size() > kMaxPooled || total > kMaxPooledBytes) {
        total -= p.free.front().capacity;
        std::free(p.free.front().data);
        p.free.erase(p.free.begin());
      }
      return;
    } catch (...) {  // a destructor never throws: fall back to freeing
    }
  }
  std::free(data_);
}

}  // namespace m2f

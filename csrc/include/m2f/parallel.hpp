// A small fork-join helper: splits [0, n) into contiguous chunks over worker threads.
// Work items must be independent; exceptions from workers are rethrown on the caller's thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace m2f {

inline int default_thread_count() {
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(std::min(hw, 16u));
}

// fn(begin, end) is called on each chunk. min_chunk keeps tiny jobs on one thread, where
// starting threads would cost more than the work.
template <typename Fn>
void parallel_for(std::int64_t n, int threads, std::int64_t min_chunk, Fn&& fn) {
  if (n <= 0) return;
  if (threads <= 0) threads = default_thread_count();
  std::int64_t max_workers = std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, min_chunk));
  int workers = static_cast<int>(std::min<std::int64_t>(threads, max_workers));
  if (workers <= 1) {
    fn(std::int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(workers));
  pool.reserve(static_cast<std::size_t>(workers - 1));
  std::int64_t chunk = (n + workers - 1) / workers;
  for (int w = 1; w < workers; ++w) {
    std::int64_t begin = w * chunk, end = std::min(n, begin + chunk);
    if (begin >= end) break;
    pool.emplace_back([&, w, begin, end] {
      try {
        fn(begin, end);
      } catch (...) {
        errors[static_cast<std::size_t>(w)] = std::current_exception();
      }
    });
  }
  try {
    fn(std::int64_t{0}, std::min(n, chunk));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace m2f

#include "titan/core/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "titan/config.h"
#include "titan/core/error.h"

namespace titan {
namespace {

// Sizes are rounded up so that blocks of nearly equal size can be reused for each other:
// to 64 bytes below 1 MiB, to 1/8 of the size's power of two above (at most 12.5% waste).
int64_t rounded_size(int64_t bytes) {
  bytes = std::max<int64_t>(bytes, 1);
  int64_t step = CpuAllocator::kAlignment;
  if (bytes > (int64_t(1) << 20)) {
    step = int64_t(1) << (63 - __builtin_clzll(uint64_t(bytes)) - 3);
  }
  return (bytes + step - 1) / step * step;
}

}  // namespace

CpuAllocator::~CpuAllocator() { release_cached(); }

void* CpuAllocator::allocate(int64_t bytes) {
  TITAN_CHECK(bytes >= 0) << "negative allocation of " << bytes << " bytes";
  const int64_t size = rounded_size(bytes);
  std::lock_guard lock(mutex_);
  void* ptr = nullptr;
  // Reuse a cached block of exactly this rounded size. Taking a bigger one would make
  // the counters depend on allocation history, which tests could not predict.
  if (auto it = free_blocks_.find(size); it != free_blocks_.end()) {
    ptr = it->second;
    free_blocks_.erase(it);
    stats_.cached_bytes -= size;
  } else {
    ptr = std::aligned_alloc(kAlignment, size_t(size));
    if (ptr == nullptr) {  // give the cache back to the system and try once more
      for (auto& [s, p] : free_blocks_) std::free(p);
      free_blocks_.clear();
      stats_.cached_bytes = 0;
      ptr = std::aligned_alloc(kAlignment, size_t(size));
    }
    TITAN_CHECK(ptr != nullptr) << "out of host memory allocating " << size << " bytes ("
                                << stats_.current_bytes << " bytes in use)";
    ++stats_.system_allocations;
  }
  stats_.current_bytes += size;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
  return ptr;
}

void CpuAllocator::deallocate(void* ptr, int64_t bytes) {
  if (ptr == nullptr) return;
  const int64_t size = rounded_size(bytes);
  std::lock_guard lock(mutex_);
  stats_.current_bytes -= size;
  stats_.cached_bytes += size;
  free_blocks_.emplace(size, ptr);
}

MemoryStats CpuAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CpuAllocator::reset_peak() {
  std::lock_guard lock(mutex_);
  stats_.peak_bytes = stats_.current_bytes;
}

void CpuAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  for (auto& [size, ptr] : free_blocks_) std::free(ptr);
  free_blocks_.clear();
  stats_.cached_bytes = 0;
}

Allocator& allocator_for(Device device) {
  static CpuAllocator cpu;
  if (device.is_cpu()) return cpu;
#if TITAN_HAVE_CUDA
  return cuda_allocator(device.index);
#else
  TITAN_FAIL() << "this build has no CUDA backend; cannot allocate on " << device;
#endif
}

}  // namespace titan

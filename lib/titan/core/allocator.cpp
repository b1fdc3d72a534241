#include "titan/core/allocator.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>

namespace titan {
namespace {

// Tag names, interned: id 0 is the untagged bucket.
class TagTable {
 public:
  int id(std::string_view name) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == name) return int(i);
    }
    names_.emplace_back(name);
    return int(names_.size() - 1);
  }
  std::string name(int id) const {
    std::lock_guard lock(mutex_);
    return names_[size_t(id)];
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> names_{kUntaggedMemory};
};

TagTable& tag_table() {
  static TagTable table;
  return table;
}

thread_local int current_tag = 0;

std::vector<TagUsage> usage_list(const std::vector<int64_t>& bytes,
                                 const std::vector<int64_t>& allocations) {
  std::vector<TagUsage> usage;
  for (size_t id = 0; id < bytes.size(); ++id) {
    if (bytes[id] != 0) usage.push_back({tag_table().name(int(id)), bytes[id], allocations[id]});
  }
  std::stable_sort(usage.begin(), usage.end(),
                   [](const TagUsage& a, const TagUsage& b) { return a.bytes > b.bytes; });
  return usage;
}

}  // namespace

MemoryTagScope::MemoryTagScope(std::string_view tag) : previous_(current_tag) {
  current_tag = tag_table().id(tag);
}

MemoryTagScope::~MemoryTagScope() { current_tag = previous_; }

void* Allocator::allocate(int64_t bytes) {
  TITAN_CHECK(bytes >= 0) << "negative allocation of " << bytes << " bytes";
  const int64_t size = round_size(bytes);
  const int tag = current_tag;
  std::lock_guard lock(mutex_);
  void* ptr = nullptr;
  if (limit_ < 0 || stats_.current_bytes + size <= limit_) ptr = acquire(size);
  if (ptr == nullptr) {
    throw OutOfMemoryError("out of " + (device().is_cpu() ? std::string("host") : "device") +
                           " memory allocating " + std::to_string(size) + " bytes (" +
                           std::to_string(stats_.current_bytes) + " bytes in use)");
  }
  live_.emplace(ptr, Live{size, tag});
  if (size_t(tag) >= tag_bytes_.size()) {
    tag_bytes_.resize(size_t(tag) + 1, 0);
    tag_allocations_.resize(size_t(tag) + 1, 0);
  }
  tag_bytes_[size_t(tag)] += size;
  tag_allocations_[size_t(tag)] += 1;
  stats_.current_bytes += size;
  if (stats_.current_bytes > stats_.peak_bytes) {
    stats_.peak_bytes = stats_.current_bytes;
    peak_tag_bytes_ = tag_bytes_;  // a few dozen tags: cheap beside the allocation
    peak_tag_allocations_ = tag_allocations_;
  }
  return ptr;
}

void Allocator::deallocate(void* ptr, int64_t /*bytes*/) {
  if (ptr == nullptr) return;
  std::lock_guard lock(mutex_);
  const auto it = live_.find(ptr);
  TITAN_CHECK(it != live_.end()) << "deallocate of a block this allocator does not hold";
  const Live block = it->second;
  live_.erase(it);
  tag_bytes_[size_t(block.tag)] -= block.size;
  tag_allocations_[size_t(block.tag)] -= 1;
  stats_.current_bytes -= block.size;
  release(ptr, block.size);
}

MemoryStats Allocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Allocator::reset_peak() {
  std::lock_guard lock(mutex_);
  stats_.peak_bytes = stats_.current_bytes;
  peak_tag_bytes_ = tag_bytes_;
  peak_tag_allocations_ = tag_allocations_;
}

void Allocator::release_cached() {
  std::lock_guard lock(mutex_);
  release_cache();
}

std::vector<TagUsage> Allocator::usage_now() const {
  std::lock_guard lock(mutex_);
  return usage_list(tag_bytes_, tag_allocations_);
}

std::vector<TagUsage> Allocator::usage_at_peak() const {
  std::lock_guard lock(mutex_);
  return usage_list(peak_tag_bytes_, peak_tag_allocations_);
}

void Allocator::set_limit_for_testing(int64_t bytes) {
  std::lock_guard lock(mutex_);
  limit_ = bytes;
}

namespace {

// Counting mode's address space: reserved once, handed out by a bump pointer, never
// returned (freed blocks go to the allocator's cache, as all blocks do).
struct CountingRegion {
  static constexpr size_t kBytes = size_t(16) << 40;  // 16 TiB of addresses, no memory
  char* base = nullptr;
  size_t used = 0;
  bool contains(const void* p) const {
    return base != nullptr && p >= base && p < base + kBytes;
  }
};
CountingRegion& counting_region() {
  static CountingRegion region;
  return region;
}
std::atomic<bool> counting{false};

}  // namespace

void enter_counting_mode() {
  CountingRegion& region = counting_region();
  if (region.base == nullptr) {
    void* p = mmap(nullptr, CountingRegion::kBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    TITAN_CHECK(p != MAP_FAILED) << "counting mode: cannot reserve "
                                 << (CountingRegion::kBytes >> 40) << " TiB of address space";
    region.base = static_cast<char*>(p);
  }
  counting = true;
}

bool counting_mode() { return counting.load(std::memory_order_relaxed); }

int64_t allocator_block_bytes(Device device, int64_t bytes) {
  bytes = std::max<int64_t>(bytes, 1);
  int64_t step = device.is_cpu() ? CpuAllocator::kAlignment : 512;
  if (bytes > (int64_t(1) << 20)) step = int64_t(1) << (63 - __builtin_clzll(uint64_t(bytes)) - 3);
  return (bytes + step - 1) / step * step;
}

// --- CPU --------------------------------------------------------------------------------

CpuAllocator::~CpuAllocator() { release_cache(); }

int64_t CpuAllocator::round_size(int64_t bytes) const {
  return allocator_block_bytes(Device::cpu(), bytes);
}

void* CpuAllocator::acquire(int64_t size) {
  // Reuse a cached block of exactly this rounded size. Taking a bigger one would make
  // the counters depend on allocation history, which tests could not predict.
  if (auto it = free_blocks_.find(size); it != free_blocks_.end()) {
    void* ptr = it->second;
    free_blocks_.erase(it);
    stats_.cached_bytes -= size;
    return ptr;
  }
  if (counting_mode()) {  // address space only: nothing backs it until written
    CountingRegion& region = counting_region();
    if (region.used + size_t(size) > CountingRegion::kBytes) return nullptr;
    void* ptr = region.base + region.used;
    region.used += size_t(size);
    ++stats_.system_allocations;
    return ptr;
  }
  void* ptr = std::aligned_alloc(kAlignment, size_t(size));
  if (ptr == nullptr) {  // give the cache back to the system and try once more
    release_cache();
    ptr = std::aligned_alloc(kAlignment, size_t(size));
  }
  if (ptr != nullptr) ++stats_.system_allocations;
  return ptr;
}

void CpuAllocator::release(void* ptr, int64_t size) {
  stats_.cached_bytes += size;
  free_blocks_.emplace(size, ptr);
}

void CpuAllocator::release_cache() {
  for (auto& [size, ptr] : free_blocks_) {
    if (!counting_region().contains(ptr)) std::free(ptr);
  }
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

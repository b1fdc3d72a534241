// Memory for tensors, with counters that tests, the step log and memory snapshots read.
//
// An Allocator hands out blocks for one device and counts the bytes in use now and at the
// peak. The CPU allocator aligns every block to 64 bytes (a cache line, an AVX-512
// register) and keeps freed blocks for reuse, so a training step that frees and allocates
// the same shapes every iteration stops calling the system allocator after the first step.
//
// Every allocation carries a tag: what part of training it belongs to (parameters,
// gradients, optimizer, activations/layers.3, communication, ...). The tag is the calling
// thread's innermost MemoryTagScope, "other" outside any. The allocator counts live bytes
// per tag and copies those counts each time current bytes reach a new peak, so a memory
// snapshot can say what the peak was made of, and the parts add up to the peak exactly:
//
//   { MemoryTagScope tag("activations/layers.3"); layer.forward(...); }
//   allocator_for(Device::cpu()).usage_at_peak();   // [{tag, bytes, allocations}, ...]
//
// Counted bytes are block bytes (the requested size rounded up to the backend's block
// size): what the process holds, the same numbers in stats() and in the tag usage.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "titan/build_config.h"
#include "titan/core/device.h"
#include "titan/core/error.h"

namespace titan {

struct MemoryStats {
  int64_t current_bytes = 0;  // handed out and not yet returned
  int64_t peak_bytes = 0;     // highest current_bytes since the last reset_peak()
  int64_t cached_bytes = 0;   // returned, kept for reuse
  int64_t system_allocations = 0;  // calls that reached the system allocator
};

// The tag new allocations on this thread get until the scope ends (scopes nest; the
// innermost wins). Tags are interned: a name costs a lookup once per scope.
class MemoryTagScope {
 public:
  explicit MemoryTagScope(std::string_view tag);
  ~MemoryTagScope();
  MemoryTagScope(const MemoryTagScope&) = delete;
  MemoryTagScope& operator=(const MemoryTagScope&) = delete;

 private:
  int previous_;
};

inline constexpr const char* kUntaggedMemory = "other";

// Live memory of one tag.
struct TagUsage {
  std::string tag;
  int64_t bytes = 0;
  int64_t allocations = 0;
};

// Thrown when the device (or the test limit) has no room for a block. The allocator's
// usage_now() still describes what was live, for the out-of-memory snapshot.
class OutOfMemoryError : public Error {
 public:
  using Error::Error;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual Device device() const = 0;

  void* allocate(int64_t bytes);
  void deallocate(void* ptr, int64_t bytes);
  MemoryStats stats() const;
  void reset_peak();  // peak := current, and the peak's tag usage := the current one
  // Returns cached blocks to the system.
  void release_cached();
  // Live memory by tag, biggest first, tags with no live bytes left out; their bytes sum to
  // stats().current_bytes and, at peak, to stats().peak_bytes.
  std::vector<TagUsage> usage_now() const;
  std::vector<TagUsage> usage_at_peak() const;
  // Tests: allocations beyond `bytes` of current usage fail with OutOfMemoryError, as a
  // full device would (negative: no limit).
  void set_limit_for_testing(int64_t bytes);

 protected:
  // The backend, called with the lock held. round_size: the block size a request of
  // `bytes` takes. acquire: a block of exactly `size` bytes, from the backend's cache
  // (updating stats_.cached_bytes) or the system (counting stats_.system_allocations);
  // nullptr when there is no memory left. release: the block goes back to the cache.
  // release_cache: every cached block goes back to the system.
  virtual int64_t round_size(int64_t bytes) const = 0;
  virtual void* acquire(int64_t size) = 0;
  virtual void release(void* ptr, int64_t size) = 0;
  virtual void release_cache() = 0;

  MemoryStats stats_;  // guarded by mutex_

 private:
  struct Live {
    int64_t size;
    int tag;
  };
  mutable std::mutex mutex_;
  std::unordered_map<void*, Live> live_;
  std::vector<int64_t> tag_bytes_, tag_allocations_;  // by tag id, now
  std::vector<int64_t> peak_tag_bytes_, peak_tag_allocations_;  // at the last peak
  int64_t limit_ = -1;
};

class CpuAllocator final : public Allocator {
 public:
  static constexpr int64_t kAlignment = 64;
  ~CpuAllocator() override;
  Device device() const override { return Device::cpu(); }

 protected:
  int64_t round_size(int64_t bytes) const override;
  void* acquire(int64_t size) override;
  void release(void* ptr, int64_t size) override;
  void release_cache() override;

 private:
  std::unordered_multimap<int64_t, void*> free_blocks_;  // rounded size -> block
};

#if TITAN_HAVE_CUDA
// Device memory through cudaMalloc, counted the same way (core/cuda/cuda_allocator.cu).
Allocator& cuda_allocator(int device_index);
#endif

// The process's allocator for a device (one per device, like a device itself).
Allocator& allocator_for(Device device);

// Counting mode, for dry runs (comm.mode fake_backend, train/dry_run.h): memory is counted,
// not used. From enter_counting_mode() on, for the rest of the process, new CPU blocks are
// address space that no memory backs until written (one region reserved with
// MAP_NORESERVE), ops return without running (ops/dispatch.h), and zeroing or copying a
// tensor of kCountingModeWriteLimit bytes or more does nothing; smaller ones (token ids,
// scalars: what control flow reads) are still written. The allocator's counters, tags and
// peaks stay exact; the values of big tensors mean nothing. There is no way back.
void enter_counting_mode();
bool counting_mode();
inline constexpr int64_t kCountingModeWriteLimit = int64_t(1) << 20;
// Whether a write of `bytes` is done (always, outside counting mode).
inline bool writes_memory(int64_t bytes) {
  return !counting_mode() || bytes < kCountingModeWriteLimit;
}

// The block a request of `bytes` takes on `device`'s allocator: rounded up so that blocks of
// nearly equal size can be reused for each other, to `small_step` bytes (CPU 64, CUDA 512)
// up to 1 MiB and to 1/8 of the size's power of two above (at most 12.5% waste). Memory
// plans (train/memory_plan.h) count blocks with it as the allocators do.
int64_t allocator_block_bytes(Device device, int64_t bytes);

}  // namespace titan

// Memory for tensors, with counters that tests and the step log read.
//
// An Allocator hands out blocks for one device and counts the bytes in use now and at the
// peak. The CPU allocator aligns every block to 64 bytes (a cache line, an AVX-512
// register) and keeps freed blocks for reuse, so a training step that frees and allocates
// the same shapes every iteration stops calling the system allocator after the first step.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>

#include "titan/config.h"
#include "titan/core/device.h"

namespace titan {

struct MemoryStats {
  int64_t current_bytes = 0;  // handed out and not yet returned
  int64_t peak_bytes = 0;     // highest current_bytes since the last reset_peak()
  int64_t cached_bytes = 0;   // returned, kept for reuse
  int64_t system_allocations = 0;  // calls that reached the system allocator
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual Device device() const = 0;
  virtual void* allocate(int64_t bytes) = 0;
  virtual void deallocate(void* ptr, int64_t bytes) = 0;
  virtual MemoryStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Returns cached blocks to the system.
  virtual void release_cached() = 0;
};

class CpuAllocator final : public Allocator {
 public:
  static constexpr int64_t kAlignment = 64;
  ~CpuAllocator() override;
  Device device() const override { return Device::cpu(); }
  void* allocate(int64_t bytes) override;
  void deallocate(void* ptr, int64_t bytes) override;
  MemoryStats stats() const override;
  void reset_peak() override;
  void release_cached() override;

 private:
  mutable std::mutex mutex_;
  MemoryStats stats_;
  std::multimap<int64_t, void*> free_blocks_;  // rounded size -> block
};

#if TITAN_HAVE_CUDA
// Device memory through cudaMalloc, counted the same way (core/cuda/cuda_allocator.cu).
Allocator& cuda_allocator(int device_index);
#endif

// The process's allocator for a device (one per device, like a device itself).
Allocator& allocator_for(Device device);

}  // namespace titan

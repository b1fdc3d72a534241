// Device memory for tensors: cudaMalloc and cudaFree, counted like the CPU allocator.
// A caching allocator (streams, events, fragmentation) belongs to the CUDA backend issue.
#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "titan/core/allocator.h"
#include "titan/core/cuda/cuda_check.h"

namespace titan {
namespace {

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int index) : index_(index) {}
  Device device() const override { return Device::cuda(index_); }
  void* allocate(int64_t bytes) override {
    void* ptr = nullptr;
    CUDA_CHECK(cudaSetDevice(index_));
    CUDA_CHECK(cudaMalloc(&ptr, size_t(std::max<int64_t>(bytes, 1))));
    std::lock_guard lock(mutex_);
    ++stats_.system_allocations;
    stats_.current_bytes += bytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
    return ptr;
  }
  void deallocate(void* ptr, int64_t bytes) override {
    if (ptr == nullptr) return;
    cudaFree(ptr);  // never throws from a destructor path; a broken device fails elsewhere
    std::lock_guard lock(mutex_);
    stats_.current_bytes -= bytes;
  }
  MemoryStats stats() const override {
    std::lock_guard lock(mutex_);
    return stats_;
  }
  void reset_peak() override {
    std::lock_guard lock(mutex_);
    stats_.peak_bytes = stats_.current_bytes;
  }
  void release_cached() override {}

 private:
  int index_;
  mutable std::mutex mutex_;
  MemoryStats stats_;
};

}  // namespace

Allocator& cuda_allocator(int device_index) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<CudaAllocator>> allocators;
  std::lock_guard lock(mutex);
  TITAN_CHECK(device_index >= 0 && device_index < 64) << "bad CUDA device " << device_index;
  if (allocators.size() <= size_t(device_index)) allocators.resize(device_index + 1);
  if (!allocators[device_index]) allocators[device_index] = std::make_unique<CudaAllocator>(device_index);
  return *allocators[device_index];
}

}  // namespace titan

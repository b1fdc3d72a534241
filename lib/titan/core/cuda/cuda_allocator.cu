// Device memory for tensors: a caching allocator on cudaMalloc (no managed memory), counted
// and tagged like the CPU allocator (the counting is the base class's, core/allocator.cpp).
//
// Caching. cudaMalloc is slow and cudaFree waits for the device, so a freed block is kept
// and handed out again for a later request of the same rounded size. Sizes are rounded to
// 512 bytes up to 1 MiB and to 1/8 of their power of two above (at most 12.5% waste); only a
// block of exactly the rounded size is reused, never a bigger one, and blocks are never
// split: the counters then depend only on the sizes requested, as on the CPU, and tests can
// predict them. stats_.cached_bytes counts every kept block (ready or waiting, below),
// stats_.system_allocations every successful cudaMalloc.
//
// Streams. Blocks are handed out for the device's compute stream (launch.h). A block freed
// on the host while kernels queued on the compute stream still use it may be handed out at
// once: whatever its new owner queues on that stream runs after those kernels. Another
// stream breaks that: a block the communication stream may still read must not be handed
// out before that work is done. record_stream(tensor, stream) (cuda_allocator.h; PyTorch's
// Tensor.record_stream) marks the tensor's block with the stream; when the block is freed,
// an event is recorded on each marked stream, and the block waits in the cache until
// cudaEventQuery says each event has completed (looked at on every allocation). The NCCL
// communicator needs no marks for the tensors of a Work: the Work holds them until the
// operation has completed on the device.
//
// Out of memory. When cudaMalloc fails, the cache goes back to the device and cudaMalloc is
// tried once more; if that fails too, acquire returns nullptr and the base class throws
// OutOfMemoryError. Before the cudaFree calls the compute stream is synchronized (a ready
// block may still be used by kernels queued there); waiting blocks whose events have not
// completed stay cached (their stream may be a collective waiting for a peer).
//
// Locks. The base class calls acquire / release / release_cache with its lock held. The
// blocks and marks have a mutex of their own, always taken after the base's, because
// record_stream reaches them without going through the base.
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "titan/core/allocator.h"
#include "titan/core/cuda/cuda_allocator.h"
#include "titan/core/cuda/cuda_check.h"
#include "titan/core/cuda/launch.h"

namespace titan {
namespace {

// Makes a device current for a scope and puts the previous one back. Never throws (it runs
// on the free path, from destructors): status() says whether the switch worked.
class CurrentDevice {
 public:
  explicit CurrentDevice(int index) {
    status_ = cudaGetDevice(&previous_);
    if (status_ == cudaSuccess && previous_ != index) {
      status_ = cudaSetDevice(index);
      switched_ = status_ == cudaSuccess;
    }
  }
  ~CurrentDevice() {
    if (switched_) cudaSetDevice(previous_);
  }
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;
  cudaError_t status() const { return status_; }

 private:
  int previous_ = 0;
  bool switched_ = false;
  cudaError_t status_ = cudaSuccess;
};

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int index) : index_(index) {}
  // Cached blocks and events are left to the driver, which frees them with the context at
  // exit: CUDA calls from static destructors can run after the runtime is gone.
  ~CudaAllocator() override = default;
  Device device() const override { return Device::cuda(index_); }

  void record_stream(const void* ptr, cudaStream_t stream) {
    if (stream == cuda::compute_stream(index_)) return;
    std::lock_guard lock(mutex_);
    const char* address = static_cast<const char*>(ptr);
    auto it = live_.upper_bound(const_cast<char*>(address));
    TITAN_CHECK(it != live_.begin() && address < std::prev(it)->first + std::prev(it)->second.size)
        << "record_stream: the address is in no block of the allocator of "
        << Device::cuda(index_);
    std::vector<cudaStream_t>& streams = std::prev(it)->second.streams;
    if (std::find(streams.begin(), streams.end(), stream) == streams.end()) {
      streams.push_back(stream);
    }
  }

 protected:
  int64_t round_size(int64_t bytes) const override {
    return allocator_block_bytes(Device::cuda(index_), bytes);
  }

  void* acquire(int64_t size) override {
    std::lock_guard lock(mutex_);
    collect_finished();
    if (auto it = ready_.find(size); it != ready_.end()) {
      void* ptr = it->second;
      ready_.erase(it);
      stats_.cached_bytes -= size;
      live_.emplace(static_cast<char*>(ptr), LiveBlock{size, {}});
      return ptr;
    }
    CurrentDevice device(index_);
    CUDA_CHECK(device.status());
    void* ptr = nullptr;
    cudaError_t status = cudaMalloc(&ptr, size_t(size));
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it, give the cache back, try once more
      free_cache();
      status = cudaMalloc(&ptr, size_t(size));
      if (status == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return nullptr;  // the base throws OutOfMemoryError
      }
    }
    CUDA_CHECK(status);
    ++stats_.system_allocations;
    live_.emplace(static_cast<char*>(ptr), LiveBlock{size, {}});
    return ptr;
  }

  // Runs from destructors: never throws. If an event cannot be recorded, the stream is
  // waited for here instead, so a block in use is never handed out.
  void release(void* ptr, int64_t size) override {
    std::lock_guard lock(mutex_);
    stats_.cached_bytes += size;
    auto node = live_.extract(static_cast<char*>(ptr));
    if (node.empty() || node.mapped().streams.empty()) {
      ready_.emplace(size, ptr);
      return;
    }
    CurrentDevice device(index_);
    WaitingBlock waiting{ptr, size, {}};
    for (cudaStream_t stream : node.mapped().streams) {
      cudaEvent_t event = spare_event();
      if (event != nullptr && cudaEventRecord(event, stream) == cudaSuccess) {
        waiting.events.push_back(event);
      } else {
        if (event != nullptr) spare_events_.push_back(event);
        cudaGetLastError();
        cudaStreamSynchronize(stream);
        cudaGetLastError();
      }
    }
    if (waiting.events.empty()) {
      ready_.emplace(size, ptr);
    } else {
      waiting_.push_back(std::move(waiting));
    }
  }

  void release_cache() override {
    std::lock_guard lock(mutex_);
    free_cache();
  }

 private:
  struct LiveBlock {
    int64_t size;
    std::vector<cudaStream_t> streams;  // marked by record_stream
  };
  struct WaitingBlock {
    void* ptr;
    int64_t size;
    std::vector<cudaEvent_t> events;  // one per marked stream, recorded at the free
  };

  // Waiting blocks whose events have all completed become ready. mutex_ held.
  void collect_finished() {
    for (size_t i = 0; i < waiting_.size();) {
      WaitingBlock& block = waiting_[i];
      const bool done = std::all_of(block.events.begin(), block.events.end(), cuda::event_done);
      if (!done) {
        ++i;
        continue;
      }
      spare_events_.insert(spare_events_.end(), block.events.begin(), block.events.end());
      ready_.emplace(block.size, block.ptr);
      block = std::move(waiting_.back());
      waiting_.pop_back();
    }
  }

  // Ready blocks (and waiting ones that have finished) go back to the device. mutex_ held.
  void free_cache() {
    CurrentDevice device(index_);
    CUDA_CHECK(device.status());
    CUDA_CHECK(cudaStreamSynchronize(cuda::compute_stream(index_)));
    collect_finished();
    for (auto& [size, ptr] : ready_) {
      cudaFree(ptr);
      stats_.cached_bytes -= size;
    }
    ready_.clear();
  }

  // An event of this device for a waiting block (the current device is index_), or nullptr.
  cudaEvent_t spare_event() {
    if (!spare_events_.empty()) {
      cudaEvent_t event = spare_events_.back();
      spare_events_.pop_back();
      return event;
    }
    cudaEvent_t event = nullptr;
    if (cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess) return nullptr;
    return event;
  }

  int index_;
  std::mutex mutex_;  // guards the members below; taken after the base class's lock
  std::map<char*, LiveBlock> live_;                 // handed out, by address
  std::unordered_multimap<int64_t, void*> ready_;  // cached, free for reuse: size -> block
  std::vector<WaitingBlock> waiting_;              // cached, a marked stream may still use
  std::vector<cudaEvent_t> spare_events_;
};

CudaAllocator& cuda_allocator_of(int device_index) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<CudaAllocator>> allocators;
  std::lock_guard lock(mutex);
  TITAN_CHECK(device_index >= 0 && device_index < 64) << "bad CUDA device " << device_index;
  if (allocators.size() <= size_t(device_index)) allocators.resize(device_index + 1);
  if (!allocators[device_index]) allocators[device_index] = std::make_unique<CudaAllocator>(device_index);
  return *allocators[device_index];
}

}  // namespace

Allocator& cuda_allocator(int device_index) { return cuda_allocator_of(device_index); }

namespace cuda {

void record_stream(const Tensor& tensor, cudaStream_t stream) {
  TITAN_CHECK(tensor.defined() && tensor.device().is_cuda())
      << "record_stream takes a CUDA tensor, got one on " << tensor.device();
  cuda_allocator_of(tensor.device().index).record_stream(tensor.raw_data(), stream);
}

}  // namespace cuda
}  // namespace titan

// The caching device allocator (core/cuda/cuda_allocator.cu) and the streams it hands blocks
// out for (core/cuda/launch.h).
//
// The allocator is the process's one for cuda:0, shared with every other test of this
// binary: each test first returns the cache (so exact-size reuse is predictable) and then
// checks differences of the counters. Stream-ordering tests hold a stream back with a host
// function that waits for a gate the test opens later (from another thread where the test
// itself blocks), so a copy or allocation that is not ordered after the held work shows
// every time, not only when a race goes the wrong way.
// Without a GPU every test skips, saying why; without CUDA in the build the file is one
// skipped test.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaAllocator, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cuda_runtime.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "support/cuda_device.h"
#include "titan/core/allocator.h"
#include "titan/core/copy.h"
#include "titan/core/cuda/cuda_allocator.h"
#include "titan/core/cuda/launch.h"
#include "titan/ops/matmul.h"

namespace titan {
namespace {

using testing::cuda_unavailable_reason;

const Device kGpu = Device::cuda(0);
constexpr int64_t kMiB = int64_t(1) << 20;

// Holds back the work queued on a stream after it until open() (or the destructor, so a
// failed assertion never leaves a stream blocked). The host function must not call CUDA;
// it gives up after 10 s so that a broken test cannot hang the binary. Call open_later()
// before any call that blocks on the held stream.
class StreamGate {
 public:
  explicit StreamGate(cudaStream_t stream) : stream_(stream) {
    EXPECT_EQ(cudaLaunchHostFunc(stream_, &StreamGate::wait, this), cudaSuccess);
  }
  ~StreamGate() {
    open();
    if (opener_.joinable()) opener_.join();
    cudaStreamSynchronize(stream_);
  }
  void open() { open_.store(true); }
  // Opens the gate from another thread after `delay_ms`, while this one blocks in a call.
  void open_later(int delay_ms) {
    opener_ = std::thread([this, delay_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      open();
    });
  }

 private:
  static void CUDART_CB wait(void* self) {
    auto* gate = static_cast<StreamGate*>(self);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!gate->open_.load() && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  cudaStream_t stream_;
  std::atomic<bool> open_{false};
  std::thread opener_;
};

// Sets the allocator's test limit for a scope.
class LimitScope {
 public:
  LimitScope(Allocator& allocator, int64_t bytes) : allocator_(allocator) {
    allocator_.set_limit_for_testing(bytes);
  }
  ~LimitScope() { allocator_.set_limit_for_testing(-1); }

 private:
  Allocator& allocator_;
};

int64_t count_not_equal(const Tensor& host, uint8_t value) {
  const auto* bytes = static_cast<const uint8_t*>(host.raw_data());
  int64_t wrong = 0;
  for (int64_t i = 0; i < host.bytes(); ++i) wrong += bytes[i] != value;
  return wrong;
}

class CudaAllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = cuda_unavailable_reason();
    if (!reason.empty()) GTEST_SKIP() << "no CUDA device: " << reason;
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    allocator().release_cached();
    allocator().reset_peak();
    start_ = allocator().stats();
    ASSERT_EQ(start_.cached_bytes, 0);
  }
  static Allocator& allocator() { return allocator_for(kGpu); }

  MemoryStats start_;
};

TEST_F(CudaAllocatorTest, CountsRoundedBlocksAndReusesFreedOnesOfTheSameRoundedSize) {
  Allocator& a = allocator();
  void* small = a.allocate(1000);  // 512-byte steps up to 1 MiB: 1024
  EXPECT_EQ(a.stats().current_bytes - start_.current_bytes, 1024);
  EXPECT_EQ(a.stats().system_allocations - start_.system_allocations, 1);
  void* large = a.allocate(3 * kMiB + 1);  // 1/8 of 2 MiB steps above: 3.25 MiB
  EXPECT_EQ(a.stats().current_bytes - start_.current_bytes, 1024 + 3 * kMiB + kMiB / 4);
  EXPECT_EQ(a.stats().peak_bytes, a.stats().current_bytes);
  EXPECT_EQ(a.stats().system_allocations - start_.system_allocations, 2);

  a.deallocate(small, 1000);
  a.deallocate(large, 3 * kMiB + 1);
  MemoryStats after_free = a.stats();
  EXPECT_EQ(after_free.current_bytes, start_.current_bytes);
  EXPECT_EQ(after_free.peak_bytes - start_.current_bytes, 1024 + 3 * kMiB + kMiB / 4);
  EXPECT_EQ(after_free.cached_bytes, 1024 + 3 * kMiB + kMiB / 4);

  // 600 bytes round to the same 1024: the cached block comes back, no cudaMalloc.
  void* again = a.allocate(600);
  EXPECT_EQ(again, small);
  EXPECT_EQ(a.stats().system_allocations, after_free.system_allocations);
  EXPECT_EQ(a.stats().cached_bytes, 3 * kMiB + kMiB / 4);
  // 2048 bytes is another rounded size: a new block although 3.25 MiB are cached.
  void* other = a.allocate(2048);
  EXPECT_NE(other, large);
  EXPECT_EQ(a.stats().system_allocations, after_free.system_allocations + 1);
  a.deallocate(again, 600);
  a.deallocate(other, 2048);
  EXPECT_EQ(a.stats().current_bytes, start_.current_bytes);
}

const TagUsage* find_tag(const std::vector<TagUsage>& usage, const std::string& tag) {
  for (const TagUsage& u : usage) {
    if (u.tag == tag) return &u;
  }
  return nullptr;
}

TEST_F(CudaAllocatorTest, TagUsageSumsToCurrentAndPeak) {
  Allocator& a = allocator();
  std::vector<Tensor> keep;
  {
    MemoryTagScope tag("cuda_test/parameters");
    keep.push_back(Tensor::empty({1024}, DType::F32, kGpu));  // 4 KiB
    keep.push_back(Tensor::empty({3000}, DType::BF16, kGpu));  // 6000 -> 6144
  }
  {
    MemoryTagScope tag("cuda_test/activations");
    keep.push_back(Tensor::empty({kMiB}, DType::F32, kGpu));  // 4 MiB
  }
  const auto sum = [](const std::vector<TagUsage>& usage) {
    int64_t bytes = 0;
    for (const TagUsage& u : usage) bytes += u.bytes;
    return bytes;
  };
  const std::vector<TagUsage> now = a.usage_now();
  EXPECT_EQ(sum(now), a.stats().current_bytes);
  const TagUsage* activations = find_tag(now, "cuda_test/activations");
  const TagUsage* parameters = find_tag(now, "cuda_test/parameters");
  ASSERT_NE(activations, nullptr);
  ASSERT_NE(parameters, nullptr);
  EXPECT_EQ(activations->bytes, 4 * kMiB);
  EXPECT_EQ(activations->allocations, 1);
  EXPECT_EQ(parameters->bytes, 4096 + 6144);
  EXPECT_EQ(parameters->allocations, 2);

  const int64_t peak = a.stats().peak_bytes;
  keep.pop_back();  // the activations go; the peak keeps them
  EXPECT_EQ(sum(a.usage_now()), a.stats().current_bytes);
  EXPECT_EQ(sum(a.usage_at_peak()), peak);
  EXPECT_EQ(a.stats().peak_bytes, peak);
  EXPECT_EQ(find_tag(a.usage_now(), "cuda_test/activations"), nullptr);
  const TagUsage* at_peak = find_tag(a.usage_at_peak(), "cuda_test/activations");
  ASSERT_NE(at_peak, nullptr);
  EXPECT_EQ(at_peak->bytes, 4 * kMiB);
}

TEST_F(CudaAllocatorTest, TestLimitGivesOutOfMemoryError) {
  Allocator& a = allocator();
  LimitScope limit(a, start_.current_bytes + 8192);
  Tensor fits = Tensor::empty({2048}, DType::F32, kGpu);  // 8 KiB: exactly the limit
  EXPECT_THROW(Tensor::empty({1}, DType::F32, kGpu), OutOfMemoryError);
  EXPECT_EQ(a.stats().current_bytes, start_.current_bytes + 8192);
}

// A request the device cannot hold: cudaMalloc fails, the cache goes back to the device,
// the retry fails too, and the error is OutOfMemoryError; the device keeps working.
TEST_F(CudaAllocatorTest, DeviceOutOfMemoryReleasesTheCacheAndThrows) {
  Allocator& a = allocator();
  { Tensor cached = Tensor::empty({kMiB}, DType::F32, kGpu); }
  ASSERT_EQ(a.stats().cached_bytes, 4 * kMiB);
  EXPECT_THROW(a.allocate(int64_t(1) << 50), OutOfMemoryError);  // 1 PiB
  EXPECT_EQ(a.stats().cached_bytes, 0);
  EXPECT_EQ(a.stats().current_bytes, start_.current_bytes);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  Tensor works = to_device(Tensor::zeros({16}, DType::F32), kGpu);
  EXPECT_EQ(works.numel(), 16);
}

TEST_F(CudaAllocatorTest, ReleaseCachedReturnsBlocksToTheDevice) {
  Allocator& a = allocator();
  { Tensor t = Tensor::empty({1000}, DType::F32, kGpu); }
  EXPECT_EQ(a.stats().cached_bytes, 4096);
  const int64_t system = a.stats().system_allocations;
  a.release_cached();
  EXPECT_EQ(a.stats().cached_bytes, 0);
  Tensor t = Tensor::empty({1000}, DType::F32, kGpu);
  EXPECT_EQ(a.stats().system_allocations, system + 1);
}

TEST_F(CudaAllocatorTest, BlockRecordedOnTheCommunicationStreamWaitsForItsWork) {
  Allocator& a = allocator();
  const cudaStream_t communication = cuda::communication_stream(0);
  StreamGate gate(communication);  // "a collective still reading the block"

  Tensor used = Tensor::empty({1000}, DType::F32, kGpu);  // 4096 bytes
  const void* block = used.raw_data();
  cuda::record_stream(used.narrow(500, 10), communication);  // a view marks the whole block
  used = Tensor();
  EXPECT_EQ(a.stats().cached_bytes, 4096);

  Tensor meanwhile = Tensor::empty({1000}, DType::F32, kGpu);
  EXPECT_NE(meanwhile.raw_data(), block) << "handed out while the stream may still read it";
  EXPECT_EQ(a.stats().system_allocations, start_.system_allocations + 2);
  EXPECT_EQ(a.stats().cached_bytes, 4096);

  gate.open();
  ASSERT_EQ(cudaStreamSynchronize(communication), cudaSuccess);
  Tensor later = Tensor::empty({1000}, DType::F32, kGpu);
  EXPECT_EQ(later.raw_data(), block) << "not reused once the stream's work was done";
  EXPECT_EQ(a.stats().system_allocations, start_.system_allocations + 2);
  EXPECT_EQ(a.stats().cached_bytes, 0);
}

TEST_F(CudaAllocatorTest, RecordingTheComputeStreamChangesNothing) {
  StreamGate gate(cuda::compute_stream(0));  // blocks are handed out for this stream anyway
  Tensor used = Tensor::empty({1000}, DType::F32, kGpu);
  const void* block = used.raw_data();
  cuda::record_stream(used, cuda::compute_stream(0));
  used = Tensor();
  Tensor again = Tensor::empty({1000}, DType::F32, kGpu);
  EXPECT_EQ(again.raw_data(), block);
}

TEST_F(CudaAllocatorTest, RecordStreamRejectsHostTensors) {
  Tensor host = Tensor::empty({4}, DType::F32);
  EXPECT_THROW(cuda::record_stream(host, cuda::communication_stream(0)), Error);
}

// The allocator and NCCL's test() poll events between kernels: a "not ready" answer must not
// stay in the runtime's last-error slot for the next kernel's launch check to report.
TEST_F(CudaAllocatorTest, APolledNotReadyEventIsNoLaunchFailure) {
  cudaEvent_t event = nullptr;
  ASSERT_EQ(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), cudaSuccess);
  StreamGate gate(cuda::compute_stream(0));
  ASSERT_EQ(cudaEventRecord(event, cuda::compute_stream(0)), cudaSuccess);
  EXPECT_FALSE(cuda::event_done(event));
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess);
  EXPECT_NO_THROW(cuda::check_launch("the kernel after a poll"));
  gate.open();
  ASSERT_EQ(cudaEventSynchronize(event), cudaSuccess);
  EXPECT_TRUE(cuda::event_done(event));
  cudaEventDestroy(event);
}

// --- stream ordering ---------------------------------------------------------------------

// core/copy.h reads back after work queued on the compute stream before it.
TEST_F(CudaAllocatorTest, CopyToHostOrdersAfterComputeStreamWork) {
  Tensor device = Tensor::empty({kMiB}, DType::U8, kGpu);
  Tensor host = Tensor::zeros({kMiB}, DType::U8);
  StreamGate gate(cuda::compute_stream(0));
  ASSERT_EQ(cudaMemsetAsync(device.raw_mutable_data(), 0x3c, size_t(kMiB),
                            cuda::compute_stream(0)),
            cudaSuccess);
  gate.open_later(100);
  copy_tensor(device, host);  // blocks until the gate opens and the memset ran
  EXPECT_EQ(count_not_equal(host, 0x3c), 0);
}

// A cuBLASLt matmul queued on the compute stream, read back by copy_tensor.
TEST_F(CudaAllocatorTest, CopyToHostOrdersAfterAMatmul) {
  const int64_t n = 64;
  Tensor host_ones = Tensor::empty({n, n}, DType::F32);
  for (int64_t i = 0; i < n * n; ++i) host_ones.mutable_data<float>()[i] = 1.0f;
  const Tensor ones = to_device(host_ones, kGpu);
  Tensor product = Tensor::empty({n, n}, DType::F32, kGpu);
  // First call outside the gate: cuBLASLt's handle and workspace (cudaMalloc) are made here.
  ops::matmul(ones, ops::Transpose::No, ones, ops::Transpose::No, product);
  ASSERT_EQ(cudaMemsetAsync(product.raw_mutable_data(), 0, size_t(product.bytes()),
                            cuda::compute_stream(0)),
            cudaSuccess);
  Tensor host = Tensor::zeros({n, n}, DType::F32);
  StreamGate gate(cuda::compute_stream(0));
  ops::matmul(ones, ops::Transpose::No, ones, ops::Transpose::No, product);
  gate.open_later(100);
  copy_tensor(product, host);
  int64_t wrong = 0;
  for (int64_t i = 0; i < n * n; ++i) wrong += host.data<float>()[i] != float(n);
  EXPECT_EQ(wrong, 0);
}

// The compute stream is a blocking stream: a plain cudaMemcpy (legacy default stream), as
// tests and tools write it, also waits for the work queued on it.
TEST_F(CudaAllocatorTest, LegacyStreamCopyOrdersAfterComputeStreamWork) {
  Tensor device = Tensor::empty({kMiB}, DType::U8, kGpu);
  std::vector<uint8_t> host(size_t(kMiB), 0);
  StreamGate gate(cuda::compute_stream(0));
  ASSERT_EQ(cudaMemsetAsync(device.raw_mutable_data(), 0x5a, size_t(kMiB),
                            cuda::compute_stream(0)),
            cudaSuccess);
  gate.open_later(100);
  ASSERT_EQ(cudaMemcpy(host.data(), device.raw_data(), size_t(kMiB), cudaMemcpyDeviceToHost),
            cudaSuccess);
  int64_t wrong = 0;
  for (uint8_t b : host) wrong += b != 0x5a;
  EXPECT_EQ(wrong, 0);
}

// stream_wait_stream: the communication stream reads what the compute stream wrote.
TEST_F(CudaAllocatorTest, StreamWaitStreamOrdersTheCommunicationStreamAfterCompute) {
  Tensor device = Tensor::empty({kMiB}, DType::U8, kGpu);
  std::vector<uint8_t> host(size_t(kMiB), 0);
  const cudaStream_t compute = cuda::compute_stream(0);
  const cudaStream_t communication = cuda::communication_stream(0);
  StreamGate gate(compute);
  ASSERT_EQ(cudaMemsetAsync(device.raw_mutable_data(), 0x11, size_t(kMiB), compute),
            cudaSuccess);
  cuda::stream_wait_stream(communication, compute);
  // A copy into pageable memory may block the host until it is done: open from a thread.
  gate.open_later(100);
  const cudaError_t copied = cudaMemcpyAsync(host.data(), device.raw_data(), size_t(kMiB),
                                             cudaMemcpyDeviceToHost, communication);
  const cudaError_t synced = cudaStreamSynchronize(communication);
  ASSERT_EQ(copied, cudaSuccess);
  ASSERT_EQ(synced, cudaSuccess);
  int64_t wrong = 0;
  for (uint8_t b : host) wrong += b != 0x11;
  EXPECT_EQ(wrong, 0);
}

TEST_F(CudaAllocatorTest, StreamsArePerDeviceAndDistinct) {
  EXPECT_EQ(cuda::compute_stream(), cuda::compute_stream(0));
  EXPECT_EQ(cuda::communication_stream(), cuda::communication_stream(0));
  EXPECT_NE(cuda::compute_stream(0), cuda::communication_stream(0));
  EXPECT_NE(cuda::compute_stream(0), nullptr);
  unsigned flags = 0;
  ASSERT_EQ(cudaStreamGetFlags(cuda::compute_stream(0), &flags), cudaSuccess);
  EXPECT_EQ(flags & cudaStreamNonBlocking, 0u) << "the compute stream must be a blocking stream";
  ASSERT_EQ(cudaStreamGetFlags(cuda::communication_stream(0), &flags), cudaSuccess);
  EXPECT_NE(flags & cudaStreamNonBlocking, 0u);
}

}  // namespace
}  // namespace titan

#endif  // TITAN_HAVE_CUDA

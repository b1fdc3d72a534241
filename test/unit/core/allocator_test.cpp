// The CPU allocator (core/allocator.h): alignment, the byte counters tests and the step
// log read, and the cache that stops a steady training loop from calling the system.
//
// The process has one CPU allocator, shared with every other test in this binary, so each
// test measures differences from the counters it found, never absolute values.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "titan/core/allocator.h"
#include "titan/core/tensor.h"

namespace titan {
namespace {

Allocator& cpu() { return allocator_for(Device::cpu()); }

TEST(CpuAllocator, AlignsEveryBlockTo64Bytes) {
  std::vector<Tensor> tensors;
  for (int64_t bytes : {1, 3, 63, 64, 65, 1000, 4097, 1 << 20, (1 << 20) + 7}) {
    tensors.push_back(Tensor::empty({bytes}, DType::U8));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(tensors.back().raw_data()) % 64, 0u) << bytes;
  }
  // Zero bytes still gives a distinct, aligned block (sizes round up to at least 1).
  void* p = cpu().allocate(0);
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  cpu().deallocate(p, 0);
}

TEST(CpuAllocator, CountsCurrentAndPeakBytes) {
  cpu().reset_peak();
  const MemoryStats start = cpu().stats();
  EXPECT_EQ(start.peak_bytes, start.current_bytes);
  {
    const Tensor a = Tensor::empty({256}, DType::F32);  // 1,024 bytes: a multiple of 64
    EXPECT_EQ(cpu().stats().current_bytes, start.current_bytes + 1024);
    {
      const Tensor b = Tensor::empty({100}, DType::U8);  // rounded up to 128
      EXPECT_EQ(cpu().stats().current_bytes, start.current_bytes + 1024 + 128);
    }
    EXPECT_EQ(cpu().stats().current_bytes, start.current_bytes + 1024);
    EXPECT_EQ(cpu().stats().peak_bytes, start.current_bytes + 1024 + 128);
  }
  const MemoryStats end = cpu().stats();
  EXPECT_EQ(end.current_bytes, start.current_bytes);
  EXPECT_EQ(end.peak_bytes, start.current_bytes + 1024 + 128);
  // reset_peak starts a new window at the current level.
  cpu().reset_peak();
  EXPECT_EQ(cpu().stats().peak_bytes, end.current_bytes);
  { const Tensor c = Tensor::empty({16}, DType::U8); }
  EXPECT_EQ(cpu().stats().peak_bytes, end.current_bytes + 64);
}

TEST(CpuAllocator, ReusesFreedBlocksInsteadOfCallingTheSystem) {
  const Shape shapes[] = {{1000}, {37, 3}, {300'000}, {1 << 19}};  // small and > 1 MiB
  auto step = [&] {
    std::vector<Tensor> live;
    for (const Shape& s : shapes) live.push_back(Tensor::empty(s, DType::F32));
  };
  step();  // the first step may reach the system; it leaves its blocks in the cache
  const MemoryStats before = cpu().stats();
  EXPECT_GT(before.cached_bytes, 0);
  for (int i = 0; i < 10; ++i) step();
  const MemoryStats after = cpu().stats();
  EXPECT_EQ(after.system_allocations, before.system_allocations);
  EXPECT_EQ(after.current_bytes, before.current_bytes);
  EXPECT_EQ(after.cached_bytes, before.cached_bytes);
}

TEST(CpuAllocator, ReusesBlocksOfNearlyEqualSize) {
  // Sizes that round to the same block share it: 1,000 and 1,020 bytes both use 1,024.
  { const Tensor warm = Tensor::empty({1000}, DType::U8); }
  const int64_t calls = cpu().stats().system_allocations;
  { const Tensor same_block = Tensor::empty({1020}, DType::U8); }
  EXPECT_EQ(cpu().stats().system_allocations, calls);
}

TEST(CpuAllocator, ReleaseCachedEmptiesTheCache) {
  { const Tensor t = Tensor::empty({4096}, DType::F32); }
  EXPECT_GT(cpu().stats().cached_bytes, 0);
  const int64_t current = cpu().stats().current_bytes;
  cpu().release_cached();
  EXPECT_EQ(cpu().stats().cached_bytes, 0);
  EXPECT_EQ(cpu().stats().current_bytes, current);  // live blocks are untouched
  const int64_t calls = cpu().stats().system_allocations;
  { const Tensor t = Tensor::empty({4096}, DType::F32); }
  EXPECT_EQ(cpu().stats().system_allocations, calls + 1);  // the cache really was empty
}

TEST(CpuAllocator, RejectsNegativeSizes) { EXPECT_THROW(cpu().allocate(-1), Error); }

}  // namespace
}  // namespace titan

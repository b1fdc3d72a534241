// The CPU allocator (core/allocator.h): alignment, the byte counters tests and the step
// log read, and the cache that stops a steady training loop from calling the system.
//
// The process has one CPU allocator, shared with every other test in this binary, so each
// test measures differences from the counters it found, never absolute values.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
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

int64_t bytes_of(const std::vector<TagUsage>& usage, const std::string& tag) {
  for (const TagUsage& u : usage) {
    if (u.tag == tag) return u.bytes;
  }
  return 0;
}

int64_t sum_of(const std::vector<TagUsage>& usage) {
  int64_t sum = 0;
  for (const TagUsage& u : usage) sum += u.bytes;
  return sum;
}

TEST(MemoryTags, InnermostScopeTagsEachAllocation) {
  const int64_t before_outer = bytes_of(cpu().usage_now(), "test.outer");
  MemoryTagScope outer("test.outer");
  const Tensor a = Tensor::empty({256}, DType::F32);  // 1,024 bytes
  Tensor b;
  {
    MemoryTagScope inner("test.inner");
    b = Tensor::empty({100}, DType::U8);  // 128 bytes
  }
  const Tensor c = Tensor::empty({16}, DType::F32);  // back to outer: 64 bytes
  const std::vector<TagUsage> now = cpu().usage_now();
  EXPECT_EQ(bytes_of(now, "test.outer") - before_outer, 1024 + 64);
  EXPECT_EQ(bytes_of(now, "test.inner"), 128);
  EXPECT_EQ(sum_of(now), cpu().stats().current_bytes);
  b = Tensor();  // freed blocks leave their tag
  EXPECT_EQ(bytes_of(cpu().usage_now(), "test.inner"), 0);
}

TEST(MemoryTags, UsageAtPeakSumsToThePeakAndKeepsItsMakeup) {
  cpu().reset_peak();
  {
    MemoryTagScope tag("test.activations");
    const Tensor big = Tensor::empty({1 << 16}, DType::F32);  // 256 KiB, freed before the end
  }
  {
    MemoryTagScope tag("test.small");
    const Tensor small = Tensor::empty({16}, DType::F32);  // below the peak: no new copy
    const std::vector<TagUsage> at_peak = cpu().usage_at_peak();
    EXPECT_EQ(sum_of(at_peak), cpu().stats().peak_bytes);
    EXPECT_EQ(bytes_of(at_peak, "test.activations"), int64_t(1) << 18);
    EXPECT_EQ(bytes_of(at_peak, "test.small"), 0);
    for (size_t i = 1; i < at_peak.size(); ++i) EXPECT_GE(at_peak[i - 1].bytes, at_peak[i].bytes);
  }
  cpu().reset_peak();
  EXPECT_EQ(bytes_of(cpu().usage_at_peak(), "test.activations"), 0);
  EXPECT_EQ(sum_of(cpu().usage_at_peak()), cpu().stats().current_bytes);
}

TEST(MemoryTags, UntaggedAllocationsCountAsOther) {
  const int64_t before = bytes_of(cpu().usage_now(), kUntaggedMemory);
  const Tensor t = Tensor::empty({1000}, DType::U8);
  EXPECT_EQ(bytes_of(cpu().usage_now(), kUntaggedMemory), before + 1024);
}

TEST(CpuAllocator, LimitForTestingThrowsOutOfMemoryAndKeepsCounters) {
  const MemoryStats before = cpu().stats();
  cpu().set_limit_for_testing(before.current_bytes + 4096);
  const Tensor fits = Tensor::empty({1024}, DType::F32);
  try {
    const Tensor too_big = Tensor::empty({2}, DType::F32);
    ADD_FAILURE() << "allocation past the limit succeeded";
  } catch (const OutOfMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("out of host memory allocating 64 bytes"),
              std::string::npos)
        << e.what();
  }
  cpu().set_limit_for_testing(-1);
  EXPECT_EQ(cpu().stats().current_bytes, before.current_bytes + 4096);
  EXPECT_EQ(sum_of(cpu().usage_now()), cpu().stats().current_bytes);
}

}  // namespace
}  // namespace titan

// Helpers shared by the distributed tests: exact-arithmetic fills and group membership.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "titan/distributed/communicator.h"

namespace titan::distributed::testing_util {

// Small integers, so sums over ranks are exact in any order (in f32 as in i64).
inline int64_t small_value(int rank, int64_t i) { return (rank + 1) * (i % 13 + 1); }

// A byte pattern for collectives that only move data: any dtype, compared as bytes.
inline uint8_t pattern_byte(int rank, int64_t byte) { return uint8_t((rank * 37 + byte * 7 + 1) & 0xff); }

inline void fill_pattern(Tensor& t, int rank) {
  auto* bytes = static_cast<uint8_t*>(t.raw_mutable_data());
  for (int64_t b = 0; b < t.bytes(); ++b) bytes[b] = pattern_byte(rank, b);
}

// The first mismatch of `bytes` against rank `rank`'s pattern, or -1.
inline int64_t first_pattern_mismatch(const uint8_t* bytes, int64_t count, int rank) {
  for (int64_t b = 0; b < count; ++b) {
    if (bytes[b] != pattern_byte(rank, b)) return b;
  }
  return -1;
}

// The world ranks of `group`'s members, in group order (through one all_gather on `group`).
inline std::vector<int64_t> group_members(Communicator& group, int world_rank) {
  Tensor mine = Tensor::empty({1}, DType::I64);
  mine.mutable_data<int64_t>()[0] = world_rank;
  Tensor all = Tensor::empty({group.size()}, DType::I64);
  group.all_gather(mine, all).wait();
  return std::vector<int64_t>(all.data<int64_t>(), all.data<int64_t>() + group.size());
}

}  // namespace titan::distributed::testing_util

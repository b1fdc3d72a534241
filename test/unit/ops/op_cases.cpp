// The one table of op cases. Odd sizes, size 1, and the shapes that matter (GQA, a block
// boundary, a long row). What each dimension and flag means is in op_harness.h.
#include "op_harness.h"

namespace titan::testing {

std::vector<OpCase> op_cases() {
  return {
      // --- rmsnorm ---
      {"rmsnorm", RmsNormDims{.N = 1, .D = 1}},
      {"rmsnorm", RmsNormDims{.N = 3, .D = 7}},
      {"rmsnorm", RmsNormDims{.N = 5, .D = 64}},
      {"rmsnorm", RmsNormDims{.N = 2, .D = 129}},
      // --- linear ---
      {"linear", LinearDims{.N = 1, .in = 1, .out = 1}},
      {"linear", LinearDims{.N = 3, .in = 5, .out = 7}},
      {"linear", LinearDims{.N = 17, .in = 64, .out = 33}},
      // --- embedding ---
      {"embedding", EmbeddingDims{.N = 1, .V = 1, .D = 1}},
      {"embedding", EmbeddingDims{.N = 9, .V = 5, .D = 3}},
      {"embedding", EmbeddingDims{.N = 33, .V = 17, .D = 70}},
      // --- rope ---
      {"rope", RopeDims{.B = 1, .T = 1, .H = 1, .hd = 2}},
      {"rope", RopeDims{.B = 2, .T = 7, .H = 3, .hd = 6}},
      {"rope", RopeDims{.B = 1, .T = 100, .H = 2, .hd = 16}},
      // --- swiglu ---
      {"swiglu", SwigluDims{.N = 1, .F = 1}},
      {"swiglu", SwigluDims{.N = 3, .F = 7}},
      {"swiglu", SwigluDims{.N = 8, .F = 129}},
      // --- attention ---
      // Blocks are 64 rows: T = 67 and 130 end on a partial block.
      {"attention", AttentionDims{.B = 1, .T = 1, .Hq = 1, .Hkv = 1, .hd = 1}},
      {"attention", AttentionDims{.B = 2, .T = 1, .Hq = 4, .Hkv = 2, .hd = 8}},
      {"attention", AttentionDims{.B = 1, .T = 5, .Hq = 3, .Hkv = 1, .hd = 5}},
      {"attention", AttentionDims{.B = 2, .T = 7, .Hq = 2, .Hkv = 2, .hd = 16}},
      {"attention", AttentionDims{.B = 1, .T = 67, .Hq = 4, .Hkv = 2, .hd = 16}},
      {"attention", AttentionDims{.B = 1, .T = 130, .Hq = 2, .Hkv = 1, .hd = 4}},
      {"attention", AttentionDims{.B = 2, .T = 7, .Hq = 3, .Hkv = 1, .hd = 5}, kFullAttention},
      {"attention", AttentionDims{.B = 1, .T = 67, .Hq = 4, .Hkv = 2, .hd = 16}, kFullAttention},
      {"attention", AttentionDims{.B = 1, .T = 130, .Hq = 2, .Hkv = 1, .hd = 4}, kFullAttention},
      // --- cross_entropy ---
      {"cross_entropy", CrossEntropyDims{.N = 1, .D = 4, .V = 7}},
      // last chunk short
      {"cross_entropy", CrossEntropyDims{.N = 5, .D = 8, .V = 11, .chunk = 3}},
      {"cross_entropy", CrossEntropyDims{.N = 7, .D = 6, .V = 33, .chunk = 3}, kSomeIgnored},
      // one token per chunk
      {"cross_entropy", CrossEntropyDims{.N = 4, .D = 5, .V = 9, .chunk = 1}, kLabelsI64},
      {"cross_entropy", CrossEntropyDims{.N = 6, .D = 16, .V = 129, .chunk = 4},
       kSomeIgnored | kLabelsI64},
      // the tiny flavor's vocab
      {"cross_entropy", CrossEntropyDims{.N = 3, .D = 8, .V = 2048}},
      // --- cross_entropy_logits ---
      // V = 1: loss 0, gradient 0
      {"cross_entropy_logits", CrossEntropyLogitsDims{.N = 1, .V = 1}},
      {"cross_entropy_logits", CrossEntropyLogitsDims{.N = 5, .V = 13}, kSomeIgnored},
      {"cross_entropy_logits", CrossEntropyLogitsDims{.N = 4, .V = 257}, kLabelsI64},
      // --- adamw ---
      {"adamw", AdamWDims{.R = 1, .C = 1, .step = 1}},
      {"adamw", AdamWDims{.R = 3, .C = 7, .step = 1}},
      {"adamw", AdamWDims{.R = 17, .C = 33, .step = 10}, kSmallBeta1},
      {"adamw", AdamWDims{.R = 5, .C = 129, .step = 1000}},
      // --- cast ---
      // f32 -> dtype -> f32 against float64 rounding.
      {"cast", CastDims{.N = 1, .D = 1}, uint32_t(DType::BF16)},
      {"cast", CastDims{.N = 3, .D = 7}, uint32_t(DType::BF16)},
      {"cast", CastDims{.N = 5, .D = 64}, uint32_t(DType::F16)},
      {"cast", CastDims{.N = 2, .D = 129}, uint32_t(DType::F8E4M3)},
      {"cast", CastDims{.N = 17, .D = 33}, uint32_t(DType::F8E5M2)},
  };
}

}  // namespace titan::testing

// The one table of op cases. Odd sizes, size 1, and the shapes that matter (GQA, a block
// boundary, a long row). What the dims mean is written beside each op's harness.
#include "op_harness.h"

namespace titan::testing {

std::vector<OpCase> op_cases() {
  return {
      // rmsnorm: {N rows, D}
      {"rmsnorm", {1, 1}},
      {"rmsnorm", {3, 7}},
      {"rmsnorm", {5, 64}},
      {"rmsnorm", {2, 129}},
      // --- linear ---
      // linear: {N rows, in, out}
      {"linear", {1, 1, 1}},
      {"linear", {3, 5, 7}},
      {"linear", {17, 64, 33}},
      // --- embedding ---
      // embedding: {N tokens, V, D}
      {"embedding", {1, 1, 1}},
      {"embedding", {9, 5, 3}},
      {"embedding", {33, 17, 70}},
      // --- rope ---
      // rope: {B, T, H, hd}
      {"rope", {1, 1, 1, 2}},
      {"rope", {2, 7, 3, 6}},
      {"rope", {1, 100, 2, 16}},
      // --- swiglu ---
      // swiglu: {N, F}
      {"swiglu", {1, 1}},
      {"swiglu", {3, 7}},
      {"swiglu", {8, 129}},
      // --- attention ---
      // attention: {B, T, Hq, Hkv, hd}; flags 1: full attention (no mask), else causal.
      // Blocks are 64 rows: T = 67 and 130 end on a partial block.
      {"attention", {1, 1, 1, 1, 1}},
      {"attention", {2, 1, 4, 2, 8}},
      {"attention", {1, 5, 3, 1, 5}},
      {"attention", {2, 7, 2, 2, 16}},
      {"attention", {1, 67, 4, 2, 16}},
      {"attention", {1, 130, 2, 1, 4}},
      {"attention", {2, 7, 3, 1, 5}, 1},
      {"attention", {1, 67, 4, 2, 16}, 1},
      {"attention", {1, 130, 2, 1, 4}, 1},
      // --- cross_entropy ---
      // cross_entropy: {N, D, V} or {N, D, V, C tokens per chunk}; flags 1: every third
      // label is ignore_index, 2: i64 labels. cross_entropy_logits: {N, V}, same flags.
      {"cross_entropy", {1, 4, 7}},
      {"cross_entropy", {5, 8, 11, 3}},        // last chunk short
      {"cross_entropy", {7, 6, 33, 3}, 1},
      {"cross_entropy", {4, 5, 9, 1}, 2},      // one token per chunk
      {"cross_entropy", {6, 16, 129, 4}, 3},
      {"cross_entropy", {3, 8, 2048}},         // the tiny flavor's vocab
      {"cross_entropy_logits", {1, 1}},        // V = 1: loss 0, gradient 0
      {"cross_entropy_logits", {5, 13}, 1},
      {"cross_entropy_logits", {4, 257}, 2},
      // --- adamw ---
      // adamw: {R, C, step}; flags 1: beta1 = 0.3 (torch's lerp, other branch).
      {"adamw", {1, 1, 1}},
      {"adamw", {3, 7, 1}},
      {"adamw", {17, 33, 10}, 1},
      {"adamw", {5, 129, 1000}},
      // --- cast ---
      // cast: {N, D}, flags = destination DType (1 bf16, 2 f16, 3 f8e4m3, 4 f8e5m2);
      // f32 -> dtype -> f32 against float64 rounding
      {"cast", {1, 1}, uint32_t(DType::BF16)},
      {"cast", {3, 7}, uint32_t(DType::BF16)},
      {"cast", {5, 64}, uint32_t(DType::F16)},
      {"cast", {2, 129}, uint32_t(DType::F8E4M3)},
      {"cast", {17, 33}, uint32_t(DType::F8E5M2)},
  };
}

}  // namespace titan::testing

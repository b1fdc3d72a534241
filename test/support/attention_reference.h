// Float64 attention with an explicit mask, forward and backward: what the masked attention
// kernels (block-causal documents, ring attention's chunks) are checked against. Every
// (query, key) pair asks the mask; no blocks, no online softmax, O(B Hq T Tk hd).
//   q, out, dout, dq  [B, T, Hq, hd]     k, v, dk, dv  [B, Tk, Hkv, hd]     lse  [B, Hq, T]
#pragma once

#include <cstdint>
#include <functional>

#include "support/gradient_check.h"

namespace titan::testing {

struct AttentionDims64 {
  int64_t B, T, Tk, Hq, Hkv, hd;
};

// visible(b, i, j): query i of batch row b may see key j.
using AttentionMaskFn = std::function<bool(int64_t b, int64_t i, int64_t j)>;

struct AttentionResult64 {
  Values out, lse;  // a row that sees no key: out 0, lse -infinity
};
struct AttentionGrads64 {
  Values dq, dk, dv;
};

AttentionResult64 reference_masked_attention(const AttentionDims64& d, const AttentionMaskFn& mask,
                                             double scale, const Values& q, const Values& k,
                                             const Values& v);
AttentionGrads64 reference_masked_attention_backward(const AttentionDims64& d,
                                                     const AttentionMaskFn& mask, double scale,
                                                     const Values& q, const Values& k,
                                                     const Values& v, const Values& dout);

// The document of each token of [B, T] sequences cut at `eos` (the EOS ends its document):
// the count of EOS before it. Row-major [B, T].
std::vector<int32_t> documents_at_eos(const std::vector<int64_t>& tokens, int64_t B, int64_t T,
                                      int64_t eos);

}  // namespace titan::testing

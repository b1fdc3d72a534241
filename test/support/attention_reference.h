// Float64 attention with an explicit mask, forward and backward: what the attention kernels
// (causal or full, keys of another length, block-causal documents, ring attention's chunks)
// are checked against. Every (query, key) pair asks the mask; no blocks, no online softmax,
// O(B Hq T Tk hd). Beside it, the helpers the attention tests share: positions and documents
// as host vectors (AttentionLayout), giving the mask of ops/attention.h (reference_mask) and
// the op's tensors; document ids from lengths or from EOS tokens; context parallelism's
// head-tail split; and the gathering of time rows (a rank's part of whole-sequence results).
//   q, out, dout, dq  [B, T, Hq, hd]     k, v, dk, dv  [B, Tk, Hkv, hd]     lse  [B, Hq, T]
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "support/gradient_check.h"
#include "titan/ops/attention.h"

namespace titan::testing {

struct AttentionDims64 {
  int64_t B, T, Tk, Hq, Hkv, hd;
  Shape q() const { return {B, T, Hq, hd}; }
  Shape kv() const { return {B, Tk, Hkv, hd}; }
  Shape lse() const { return {B, Hq, T}; }
};

// visible(b, i, j): query i of batch row b may see key j.
using AttentionMaskFn = std::function<bool(int64_t b, int64_t i, int64_t j)>;

// ops::AttentionPositions as host vectors, for the reference's mask and the op's tensors.
// An empty vector: query i at i and key j at j (positions), or one document (documents).
struct AttentionLayout {
  std::vector<int32_t> q_position, k_position;  // [T], [Tk]
  std::vector<int32_t> q_document, k_document;  // [B, T], [B, Tk]

  // The op's form on `device`: i32 tensors, undefined where a vector is empty.
  ops::AttentionPositions tensors(int64_t B, int64_t T, int64_t Tk,
                                  Device device = Device::cpu()) const;
};

// Queries at q_times against keys at k_times of [B, T] sequences (a ring step): their global
// positions, and their documents taken from `documents` [B, T] (none when it is empty).
AttentionLayout layout_at_times(std::span<const int64_t> q_times,
                                std::span<const int64_t> k_times,
                                const std::vector<int32_t>& documents, int64_t B, int64_t T);

// The mask of ops/attention.h, as written there: key j is visible to query i of row b when
//   (mask == None || k_position[j] <= q_position[i])
//   && (no documents || q_document[b, i] == k_document[b, j]).
// The function holds copies of `layout` and the dims it needs.
AttentionMaskFn reference_mask(const AttentionDims64& d, ops::AttentionMask mask,
                               const AttentionLayout& layout = {});

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

// Document ids of each batch row, from its documents' lengths (each row summing to T).
// Row-major [B, T].
std::vector<int32_t> documents_of(const std::vector<std::vector<int64_t>>& lengths);

// The document of each token of [B, T] sequences cut at `eos` (the EOS ends its document):
// the count of EOS before it. Row-major [B, T].
std::vector<int32_t> documents_at_eos(const std::vector<int64_t>& tokens, int64_t B, int64_t T,
                                      int64_t eos);

// Context parallelism's balanced (head-tail) split: the sequence in 2 cp chunks, rank r
// holding chunks r and 2 cp - 1 - r (a head and a tail), in that order. T % (2 cp) == 0.
std::vector<int64_t> head_tail_times(int64_t T, int64_t cp, int64_t rank);

// x[:, times] of a [B, T, width] array ([B, n, width]; q, k, v, out and their gradients
// with width = heads * hd), and x[:, :, times] of a [B, H, T] one ([B, H, n]; lse).
Values gather_time_btw(const Values& x, int64_t B, int64_t T, int64_t width,
                       std::span<const int64_t> times);
Values gather_time_bht(const Values& x, int64_t B, int64_t H, int64_t T,
                       std::span<const int64_t> times);

}  // namespace titan::testing

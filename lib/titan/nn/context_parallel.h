// Context parallelism as the modules see it: the sequence's tokens are dealt to the cp ranks,
// every module but attention works on its own tokens alone, and attention computes this
// rank's queries against every rank's keys (docs/parallelism.md, "Context parallelism").
//
// How a sequence of T tokens is dealt (SequenceSplit):
//   HeadTail     cut into 2 cp chunks; rank r holds chunks r and 2cp - 1 - r, so that every
//                rank does the same causal work (an early chunk sees few keys, a late one
//                many). torchtitan's `headtail`, Megatron's load balancing.
//   Contiguous   rank r holds chunk r of cp (parallelism.context_parallel_load_balancer
//                None): the last rank does most of the causal work.
// A rank's tokens keep their global positions: RoPE rotates each by its own position, and
// the causal mask compares positions (ops/attention.h, AttentionPositions).
//
// Documents (model.attn_mask_type block_causal): the packed sequence is cut at the
// tokenizer's EOS id; the EOS is the last token of its document, so the document of token t
// is the count of EOS among tokens [0, t) (torchtitan's rule). Positions are not reset per
// document. A token attends to the earlier tokens of its own document only.
//
//   SequenceLayout seq = sequence_layout(cp, tokens, batch, freqs, document_end);
//   Tensor mine = local_tokens(cp, tokens);           // [B, T / cp] of a [B, T] batch
//   cp.attention_forward(q, k, v, scale, seq, out, lse);
//
// Implementations: the one-rank one here (no_context_parallel(), the plain op) and the
// mesh's cp group (distributed/context_parallel.h: K and V all-gathered, or passed around
// the ring while each block computes).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "titan/core/tensor.h"
#include "titan/ops/attention.h"

namespace titan::nn {

enum class SequenceSplit { HeadTail, Contiguous };

// What the blocks need to know of a microbatch's tokens besides their activations.
struct SequenceLayout {
  int64_t batch = 1;
  Tensor freqs;  // RoPE rows of this rank's tokens [T / cp, hd/2, 2]
  // The mask of this rank's queries against the keys of each cp rank (by rank): their
  // positions (cp > 1) and documents (per-document masks). Empty: the plain causal mask
  // over one rank's whole sequence is all there is.
  std::vector<ops::AttentionPositions> masks;
  const ops::AttentionPositions* mask_against(int64_t owner) const {
    return masks.empty() ? nullptr : &masks.at(size_t(owner));
  }
};

class ContextParallel {
 public:
  virtual ~ContextParallel() = default;

  virtual int64_t size() const = 0;
  virtual int64_t rank() const = 0;
  virtual SequenceSplit split() const = 0;

  // The global positions of rank r's tokens of a sequence of T, in order.
  std::vector<int32_t> positions_of(int64_t r, int64_t T) const;

  // out, lse <- softmax attention of this rank's queries q [B, T/cp, Hq, hd] over every
  // rank's keys and values (k, v [B, T/cp, Hkv, hd] here, the other ranks' there) under
  // seq's mask; shapes and dtypes as ops/attention.h. Collective over the cp group.
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                                 const SequenceLayout& seq, Tensor& out, Tensor& lse) const = 0;
  // dq, dk, dv (=) from dout and the forward's out and lse; dk and dv are this rank's keys'
  // gradients, summed over every rank's queries. Collective over the cp group.
  virtual void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  float scale, const SequenceLayout& seq, Tensor& dq, Tensor& dk,
                                  Tensor& dv) const = 0;

  // data <- max of data over the group, in place: amaxes of activations whose tokens the
  // ranks share (Float8 scales, nn/float8.h).
  virtual void all_reduce_max(Tensor& data) const = 0;
};

// cp = 1: the attention op over the rank's whole sequence.
const ContextParallel& no_context_parallel();

// This rank's columns of a [B, T] i64 host tensor (tokens, labels): [B, T / cp]; with one
// rank the tensor itself, of any device and integer type.
Tensor local_tokens(const ContextParallel& cp, const Tensor& tokens);

// The layout of a microbatch of whole sequences `tokens` [B, T] (host, i64): RoPE rows of
// this rank's positions from the table `freqs` [>= T, hd/2, 2], and the positions and
// documents of every rank's chunk (documents when document_end, the EOS id, is given),
// on `device`.
SequenceLayout sequence_layout(const ContextParallel& cp, const Tensor& tokens,
                               const Tensor& freqs, std::optional<int32_t> document_end,
                               Device device);

}  // namespace titan::nn

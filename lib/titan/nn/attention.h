// Grouped-query self-attention with RoPE, Llama's layer:
//   q = RoPE(x wq^T)  k = RoPE(x wk^T)  v = x wv^T        (heads: Hq for q, Hkv for k and v)
//   o = causal softmax(q k^T / sqrt(hd)) v                (ops/attention.h, GQA)
//   y = o wo^T
// Shapes: x, y [N, D], the N = B x T token rows; q, o [B, T, Hq, hd]; k, v [B, T, Hkv, hd];
// freqs [T, hd/2, 2]. Parameters "<prefix>.wq.weight" [Hq hd, D], wk and wv [Hkv hd, D], wo
// [D, Hq hd].
//
// Tensor parallel (nn/tensor_parallel.h): wq, wk, wv column-parallel and wo row-parallel,
// so a rank computes the heads of its pieces (Hq / tp, and Hkv / tp or the one kv head its
// q heads share); x and y are the rank's rows of the residual stream, gathered before wq,
// wk, wv and reduced after wo.
//
// Context parallel (nn/context_parallel.h): the rows are this rank's tokens of every
// sequence (T / cp of them, at their global positions for RoPE), and the attention op
// reaches the other ranks' keys through the cp group; the projections never communicate.
#pragma once

#include "titan/nn/context_parallel.h"
#include "titan/nn/linear.h"

namespace titan::nn {

// What forward keeps for backward, and what backward_input leaves for backward_weight.
struct AttentionRecord {
  Tensor x;        // wq, wk and wv's input: all N rows (gathered)
  bool x_gathered = false;  // x is a gathered copy (sequence parallel), not the input
  Tensor q, k, v;  // after RoPE
  Tensor out;      // attention output, wo's input
  Tensor lse;      // [B, Hq, T]
  // Set by backward_input, consumed and released by backward_weight:
  Tensor dy;          // gradient at wo's output, all N rows
  Tensor dq, dk, dv;  // gradients at wq, wk, wv's outputs (RoPE undone)
  int64_t bytes() const;
};

class Attention {
 public:
  // Init rules: wq, wk, wv get `init`, wo gets `output_init` (torchtitan's depth scaling).
  Attention(const std::string& prefix, int64_t dim, int64_t n_heads, int64_t n_kv_heads,
            InitRule init, InitRule output_init, const Placer& placer = {});

  std::vector<Parameter*> parameters();

  // x: this rank's rows of the [N, D] input, N = seq.batch x T (T: this rank's tokens of a
  // sequence); y: the same rows of the output.
  void forward(const Tensor& x, const SequenceLayout& seq, Tensor& y,
               AttentionRecord& record) const;
  // dx (= or += per accumulate) from dy; keeps what backward_weight needs in the record.
  void backward_input(const Tensor& dy, const SequenceLayout& seq, AttentionRecord& record,
                      Tensor& dx, ops::Accumulate accumulate) const;
  // Parameter gradients (+=) from the record.
  void backward_weight(AttentionRecord& record);

 private:
  int64_t head_dim_;
  const TensorParallel& tp_;
  const ContextParallel& cp_;
  Linear wq_, wk_, wv_, wo_;
};

}  // namespace titan::nn

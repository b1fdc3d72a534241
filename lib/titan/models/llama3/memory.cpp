#include "titan/models/llama3/memory.h"

#include <algorithm>

#include "titan/ops/cross_entropy.h"

namespace titan::models::llama3 {

std::string fsdp_unit_of(const ModelArgs& args, const std::string& parameter) {
  const std::string first = parameter.substr(0, parameter.find('.'));
  if (first == "layers") {  // "layers.<i>.": the block
    const size_t end = parameter.find('.', first.size() + 1);
    return parameter.substr(0, end);
  }
  if (args.weight_tying && (first == "tok_embeddings" || first == "norm")) {
    return "tok_embeddings, norm";
  }
  if (first == "norm" || first == "output") return "norm, output";
  return first;
}

ActivationMemory activation_memory(const ModelArgs& args, const ActivationShape& s,
                                   bool loss_parallel) {
  const int64_t act = dtype_bytes(s.dtype), f32 = 4;
  const int64_t N = s.batch * (s.seq_len / s.cp);       // this rank's tokens
  const int64_t n = s.sequence_parallel ? N / s.tp : N;  // ... of the residual stream
  const int64_t D = args.dim, hd = args.head_dim();
  const int64_t hq = args.n_heads / s.tp;
  const int64_t hkv = std::max<int64_t>(1, args.n_kv_heads / s.tp);  // tp > kv heads: replicas
  const int64_t F = args.hidden_dim() / s.tp;
  const int64_t residual = n * D * act, gathered = N * D * act;
  const int64_t q = N * hq * hd * act, kv = N * hkv * hd * act, hidden = N * F * act;
  const bool sp = s.sequence_parallel;

  // The block's forward, in allocation order: output, attention norm (xn, rstd), the
  // residual sum h, attention (its gathered input, q, k, v, out, lse), ffn norm (hn, rstd),
  // feed-forward (its gathered input, a = x w1, b = x w3, g = swiglu(a, b)). CheapOps drops
  // xn, hn and g (nn::TransformerBlock::release_for_recompute); full keeps the output alone.
  auto block_forward = [&](bool cheap_ops) {
    std::vector<int64_t> kept = {residual};
    if (!cheap_ops) kept.push_back(residual);
    kept.insert(kept.end(), {n * f32, residual});
    if (sp) kept.push_back(gathered);
    kept.insert(kept.end(), {q, kv, kv, q, N * hq * f32});
    if (!cheap_ops) kept.push_back(residual);
    kept.push_back(n * f32);
    if (sp) kept.push_back(gathered);
    kept.insert(kept.end(), {hidden, hidden});
    if (!cheap_ops) kept.push_back(hidden);
    return kept;
  };
  ActivationMemory m;
  m.block_kept[0] = block_forward(false);
  m.block_kept[1] = {residual};
  m.block_kept[2] = block_forward(true);
  // Its backward: the gradient at its output and its input, then the feed-forward's (dhn,
  // dg, da, db) or the attention's (da, db kept for the weights; dh, dxn, dout, dq, dk, dv
  // and the softmax's row sums), whichever is more.
  std::vector<int64_t> feed_forward = {residual, residual, residual};  // dout, dx, dhn
  if (sp) feed_forward.push_back(gathered);
  feed_forward.insert(feed_forward.end(), {hidden, hidden, hidden});
  std::vector<int64_t> attention = {residual, residual, residual};
  if (sp) attention.insert(attention.end(), {gathered, gathered});
  attention.insert(attention.end(), {hidden, hidden, residual, residual, q, q, kv, kv,
                                     N * hq * f32});
  auto sum = [](const std::vector<int64_t>& v) {
    int64_t total = 0;
    for (const int64_t b : v) total += b;
    return total;
  };
  m.block_backward = sum(feed_forward) > sum(attention) ? feed_forward : attention;
  m.block_weight_inputs = {residual, residual, hidden, hidden, q, kv, kv};  // dhn, dxn, ...
  if (sp) m.block_weight_inputs.insert(m.block_weight_inputs.end(), {gathered, gathered});

  m.embedding_kept = {residual};
  m.head_kept = {residual, n * f32, N * f32};  // the final norm's output and rstd, the lse
  if (sp) m.head_kept.push_back(gathered);     // the loss's gathered input
  const int64_t V = args.vocab_size, slice = (V + s.tp - 1) / s.tp;
  m.head_backward = {residual};  // dhn
  if (s.tp == 1 || loss_parallel) {
    m.head_backward.push_back(ops::cross_entropy_workspace_bytes(N, s.tp == 1 ? V : slice));
  } else {  // the whole logits, gathered, and their gradient
    m.head_backward.insert(m.head_backward.end(), {N * slice * f32, N * slice * s.tp * f32,
                                                   N * V * f32, N * V * f32, N * slice * f32});
  }
  m.buffers = {args.max_seq_len * hd * f32};  // cos and sin per position and frequency
  return m;
}

}  // namespace titan::models::llama3

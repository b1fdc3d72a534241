#include "titan/nn/latent_attention.h"

#include <utility>

#include "titan/core/copy.h"
#include "titan/ops/columns.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/rope.h"

namespace titan::nn {

int64_t LatentAttentionRecord::bytes() const {
  int64_t total = 0;
  for (const Tensor* t : {&qa, &qn, &rstd_q, &c, &cn, &rstd_kv, &q, &k, &v, &out, &lse, &o, &dq,
                          &dqn, &dqa, &dkvb, &dcn, &dkva}) {
    if (t->defined()) total += t->bytes();
  }
  // Gathered copies (tensor parallel with sequence parallel) are ours; x and dy otherwise
  // the caller's.
  for (const auto& [all, mine] : {std::pair<const Tensor*, const Tensor*>{&x_all, &x},
                                  {&qn_all, &qn}, {&cn_all, &cn}}) {
    if (all->defined() && all->raw_data() != mine->raw_data()) total += all->bytes();
  }
  return total;
}

namespace {

std::optional<Linear> linear_if(bool wanted, const std::string& name, int64_t in, int64_t out,
                                InitRule init, const Placer& placer) {
  if (!wanted) return std::nullopt;
  return Linear(name, in, out, init, placer);
}

// RoPE on the last `rope` of each head's `head_dim` columns of t [B, T, H, head_dim], in
// place: forward, or its backward (the inverse rotation) on a gradient.
void rotate_tail(Tensor& t, int64_t rope, const Tensor& freqs, bool backward) {
  const int64_t B = t.size(0), T = t.size(1), H = t.size(2), hd = t.size(3);
  Tensor rows = t.reshape({B * T * H, hd});
  Tensor part = Tensor::empty({B, T, H, rope}, t.dtype(), t.device());
  Tensor part_rows = part.reshape({B * T * H, rope});
  ops::copy_columns(rows, hd - rope, part_rows, 0, rope);
  if (backward) {
    ops::rope_backward(part, freqs, part);
  } else {
    ops::rope_forward(part, freqs, part);
  }
  ops::copy_columns(part_rows, 0, rows, hd - rope, rope);
}

}  // namespace

LatentAttention::LatentAttention(const std::string& prefix, const LatentAttentionDims& d,
                                 InitRule init, InitRule output_init, const Placer& placer)
    : dims_(d),
      tp_(placer.tp_group()),
      cp_(placer.cp_group()),
      wq_(linear_if(d.q_lora_rank == 0, prefix + ".wq", d.dim, d.n_heads * d.qk_head_dim(), init,
                    placer)),
      wq_a_(linear_if(d.q_lora_rank > 0, prefix + ".wq_a", d.dim, d.q_lora_rank, init, placer)),
      wq_b_(linear_if(d.q_lora_rank > 0, prefix + ".wq_b", d.q_lora_rank,
                      d.n_heads * d.qk_head_dim(), init, placer)),
      wkv_a_(prefix + ".wkv_a", d.dim, d.kv_lora_rank + d.qk_rope_head_dim, init, placer),
      kv_norm_(prefix + ".kv_norm", d.kv_lora_rank, d.norm_eps, placer),
      wkv_b_(prefix + ".wkv_b", d.kv_lora_rank, d.n_heads * (d.qk_nope_head_dim + d.v_head_dim),
             init, placer),
      wo_(prefix + ".wo", d.n_heads * d.v_head_dim, d.dim, output_init, placer) {
  if (d.q_lora_rank > 0) q_norm_.emplace(prefix + ".q_norm", d.q_lora_rank, d.norm_eps, placer);
  TITAN_CHECK(d.n_heads % tp_.size() == 0)
      << prefix << ": " << d.n_heads << " heads over " << tp_.size() << " tensor-parallel ranks";
  TITAN_CHECK(d.softmax_scale > 0) << prefix << ": softmax_scale is not set";
  TITAN_CHECK(d.v_head_dim <= d.qk_head_dim())
      << prefix << ": v_head_dim " << d.v_head_dim << " exceeds the query-key head dim "
      << d.qk_head_dim();
}

std::vector<Parameter*> LatentAttention::parameters() {
  std::vector<Parameter*> params;
  if (wq_) {
    params.push_back(&wq_->weight());
  } else {
    params.push_back(&wq_a_->weight());
    params.push_back(&q_norm_->weight());
    params.push_back(&wq_b_->weight());
  }
  for (Parameter* p : {&wkv_a_.weight(), &kv_norm_.weight(), &wkv_b_.weight(), &wo_.weight()}) {
    params.push_back(p);
  }
  return params;
}

void LatentAttention::forward(const Tensor& x, const SequenceLayout& seq, Tensor& y,
                              LatentAttentionRecord& r) const {
  const int64_t n = x.size(0), N = n * (tp_.sequence_parallel() ? tp_.size() : 1);
  const int64_t B = seq.batch, T = N / B, H = dims_.n_heads / tp_.size();  // this rank's heads
  const int64_t qk = dims_.qk_head_dim(), nope = dims_.qk_nope_head_dim;
  const int64_t rope = dims_.qk_rope_head_dim, vd = dims_.v_head_dim, kvl = dims_.kv_lora_rank;
  const Device dev = x.device();
  const DType act = x.dtype();
  const UseRows nothing = [](const Tensor&, int64_t) {};
  r.x = x;
  // Queries of this rank's heads, RoPE on their last dims. The query rank's projection and
  // norm run on this rank's rows; the heads' projection on all N.
  r.q = Tensor::empty({B, T, H, qk}, act, dev);
  Tensor q2 = r.q.reshape({N, H * qk});
  if (wq_) {
    tp_.gather_rows(x, r.x_all, [&](const Tensor& rows, int64_t first) {
      Tensor q = q2.narrow(first, rows.size(0));
      wq_->forward(rows, q);
    });
  } else {
    r.qa = Tensor::empty({n, dims_.q_lora_rank}, act, dev);
    wq_a_->forward(x, r.qa);
    r.qn = Tensor::empty(r.qa.shape(), act, dev);
    r.rstd_q = Tensor::empty({n}, DType::F32, dev);
    q_norm_->forward(r.qa, r.qn, r.rstd_q);
    tp_.gather_rows(r.qn, r.qn_all, [&](const Tensor& rows, int64_t first) {
      Tensor q = q2.narrow(first, rows.size(0));
      wq_b_->forward(rows, q);
    });
  }
  rotate_tail(r.q, rope, seq.freqs, false);
  // The latent and the shared rotary key, of this rank's rows; gathered for the heads.
  Tensor kva = Tensor::empty({n, kvl + rope}, act, dev);
  wkv_a_.forward(x, kva);
  r.c = Tensor::empty({n, kvl}, act, dev);
  ops::copy_columns(kva, 0, r.c, 0, kvl);
  Tensor k_pe_mine = Tensor::empty({n, rope}, act, dev);
  ops::copy_columns(kva, kvl, k_pe_mine, 0, rope);
  Tensor k_pe_rows;
  tp_.gather_rows(k_pe_mine, k_pe_rows, nothing);
  Tensor k_pe = k_pe_rows.reshape({B, T, 1, rope});
  ops::rope_forward(k_pe, seq.freqs, k_pe);
  r.cn = Tensor::empty({n, kvl}, act, dev);
  r.rstd_kv = Tensor::empty({n}, DType::F32, dev);
  kv_norm_.forward(r.c, r.cn, r.rstd_kv);
  Tensor kvb = Tensor::empty({N * H, nope + vd}, act, dev);
  Tensor kvb2 = kvb.reshape({N, H * (nope + vd)});
  tp_.gather_rows(r.cn, r.cn_all, [&](const Tensor& rows, int64_t first) {
    Tensor out = kvb2.narrow(first, rows.size(0));
    wkv_b_.forward(rows, out);
  });
  // Keys [k_nope, k_pe] and values padded to the same head dim.
  r.k = Tensor::empty({B, T, H, qk}, act, dev);
  Tensor k_rows = r.k.reshape({N * H, qk});
  ops::copy_columns(kvb, 0, k_rows, 0, nope);
  ops::broadcast_columns(k_pe_rows, k_rows, nope);
  r.v = Tensor::empty({B, T, H, qk}, act, dev);
  Tensor v_rows = r.v.reshape({N * H, qk});
  if (vd < qk) ops::fill(r.v, 0.0f);
  ops::copy_columns(kvb, nope, v_rows, 0, vd);
  r.out = Tensor::empty({B, T, H, qk}, act, dev);
  r.lse = Tensor::empty({B, H, T}, DType::F32, dev);
  cp_.attention_forward(r.q, r.k, r.v, dims_.softmax_scale, seq, r.out, r.lse);
  r.o = Tensor::empty({N, H * vd}, act, dev);
  Tensor o_rows = r.o.reshape({N * H, vd});
  ops::copy_columns(r.out.reshape({N * H, qk}), 0, o_rows, 0, vd);
  tp_.reduce_rows(y, N, [&](int64_t first, int64_t count, Tensor& partial) {
    wo_.forward(r.o.narrow(first, count), partial);
  });
}

void LatentAttention::backward_input(const Tensor& dy, const SequenceLayout& seq,
                                     LatentAttentionRecord& r, Tensor& dx,
                                     ops::Accumulate accumulate) const {
  const int64_t B = r.q.size(0), T = r.q.size(1), H = r.q.size(2), N = B * T;
  const int64_t qk = dims_.qk_head_dim(), nope = dims_.qk_nope_head_dim;
  const int64_t rope = dims_.qk_rope_head_dim, vd = dims_.v_head_dim, kvl = dims_.kv_lora_rank;
  const int64_t n = r.c.size(0);
  const Device dev = dy.device();
  const DType act = dy.dtype();
  Tensor d_o = Tensor::empty({N * H, vd}, act, dev);
  Tensor d_o2 = d_o.reshape({N, H * vd});
  tp_.gather_rows(dy, r.dy, [&](const Tensor& rows, int64_t first) {
    Tensor d = d_o2.narrow(first, rows.size(0));
    wo_.backward_input(rows, d, ops::Accumulate::No);
  });
  Tensor dout = Tensor::empty(r.out.shape(), act, dev);
  Tensor dout_rows = dout.reshape({N * H, qk});
  if (vd < qk) ops::fill(dout, 0.0f);
  ops::copy_columns(d_o, 0, dout_rows, 0, vd);
  Tensor dq = Tensor::empty(r.q.shape(), act, dev);
  Tensor dk = Tensor::empty(r.k.shape(), act, dev), dv = Tensor::empty(r.v.shape(), act, dev);
  cp_.attention_backward(dout, r.q, r.k, r.v, r.out, r.lse, dims_.softmax_scale, seq, dq, dk, dv);
  rotate_tail(dq, rope, seq.freqs, true);
  r.dq = dq.reshape({N, H * qk});
  // Back through the keys and values: this rank's heads give partial gradients of the
  // latent and the rotary key, summed over the tp ranks into this rank's rows.
  r.dkvb = Tensor::empty({N, H * (nope + vd)}, act, dev);
  Tensor dkvb_rows = r.dkvb.reshape({N * H, nope + vd});
  ops::copy_columns(dk.reshape({N * H, qk}), 0, dkvb_rows, 0, nope);
  ops::copy_columns(dv.reshape({N * H, qk}), 0, dkvb_rows, nope, vd);
  Tensor dk_pe = Tensor::empty({B, T, 1, rope}, act, dev);
  Tensor dk_pe_rows = dk_pe.reshape({N, rope});
  ops::sum_column_groups(dk.reshape({N * H, qk}), nope, dk_pe_rows);
  ops::rope_backward(dk_pe, seq.freqs, dk_pe);
  r.dcn = Tensor::empty({n, kvl}, act, dev);
  tp_.reduce_rows(r.dcn, N, [&](int64_t first, int64_t count, Tensor& partial) {
    wkv_b_.backward_input(r.dkvb.narrow(first, count), partial, ops::Accumulate::No);
  });
  Tensor dk_pe_mine = Tensor::empty({n, rope}, act, dev);
  tp_.reduce_rows(dk_pe_mine, N, [&](int64_t first, int64_t count, Tensor& partial) {
    copy_tensor(dk_pe_rows.narrow(first, count), partial);
  });
  Tensor dc = Tensor::empty({n, kvl}, act, dev);
  kv_norm_.backward_input(r.dcn, r.c, r.rstd_kv, dc, ops::Accumulate::No);
  r.dkva = Tensor::empty({n, kvl + rope}, act, dev);
  ops::copy_columns(dc, 0, r.dkva, 0, kvl);
  ops::copy_columns(dk_pe_mine, 0, r.dkva, kvl, rope);
  if (wq_) {  // the heads' projection of all N rows: partial, reduced into this rank's rows
    reduce_rows_into(tp_, dx, N, accumulate, [&](int64_t first, int64_t count, Tensor& partial) {
      wq_->backward_input(r.dq.narrow(first, count), partial, ops::Accumulate::No);
    });
    wkv_a_.backward_input(r.dkva, dx, ops::Accumulate::Yes);
    return;
  }
  r.dqn = Tensor::empty(r.qn.shape(), act, dev);
  tp_.reduce_rows(r.dqn, N, [&](int64_t first, int64_t count, Tensor& partial) {
    wq_b_->backward_input(r.dq.narrow(first, count), partial, ops::Accumulate::No);
  });
  r.dqa = Tensor::empty(r.qa.shape(), act, dev);
  q_norm_->backward_input(r.dqn, r.qa, r.rstd_q, r.dqa, ops::Accumulate::No);
  wkv_a_.backward_input(r.dkva, dx, accumulate);
  wq_a_->backward_input(r.dqa, dx, ops::Accumulate::Yes);
}

void LatentAttention::backward_weight(LatentAttentionRecord& r) {
  wo_.backward_weight(r.dy, r.o);
  wkv_b_.backward_weight(r.dkvb, r.cn_all);
  kv_norm_.backward_weight(r.dcn, r.c, r.rstd_kv);
  wkv_a_.backward_weight(r.dkva, r.x);
  if (wq_) {
    wq_->backward_weight(r.dq, r.x_all);
  } else {
    wq_b_->backward_weight(r.dq, r.qn_all);
    q_norm_->backward_weight(r.dqn, r.qa, r.rstd_q);
    wq_a_->backward_weight(r.dqa, r.x);
  }
  r = LatentAttentionRecord{};
}

}  // namespace titan::nn

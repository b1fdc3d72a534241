// Device-independent parts of ops/attention.h: the argument checks both backends make.
#include "titan/ops/attention.h"

#include <initializer_list>
#include <utility>

namespace titan::ops {
namespace {

using NamedTensor = std::pair<const Tensor*, const char*>;

// q [B, T, Hq, hd] in an accepted dtype; k, v [B, Tk, Hkv, hd] of q's dtype, Hq a multiple
// of Hkv, keys for every query, and as many as queries when causal.
AttentionDims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v,
                           AttentionMask mask, FloatDTypes accepted, const char* op) {
  check_float_dtype(q, accepted, op, "q");
  check_dtype(k, q.dtype(), op, "k");
  TITAN_CHECK(q.dim() == 4) << op << ": q must be [B, T, Hq, hd], got " << shape_string(q.shape());
  TITAN_CHECK(k.dim() == 4) << op << ": k must be [B, Tk, Hkv, hd], got "
                            << shape_string(k.shape());
  const AttentionDims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
  TITAN_CHECK(k.size(0) == d.B && k.size(3) == d.hd)
      << op << ": k " << shape_string(k.shape()) << " does not fit q " << shape_string(q.shape());
  TITAN_CHECK(d.Hkv >= 1 && d.Hq >= 1 && d.Hq % d.Hkv == 0)
      << op << ": query heads (" << d.Hq << ") must be a multiple of kv heads (" << d.Hkv << ")";
  TITAN_CHECK(d.Tk >= 1 || d.T == 0) << op << ": queries with no keys";
  TITAN_CHECK(mask == AttentionMask::None || d.Tk == d.T)
      << op << ": causal attention needs as many keys as queries, got T " << d.T << ", Tk " << d.Tk;
  check_dtype(v, q.dtype(), op, "v");
  check_shape(v, k.shape(), op, "v");
  return d;
}

// Each tensor of `like`'s dtype and shape.
void check_like(std::initializer_list<NamedTensor> tensors, const Tensor& like, const char* op) {
  for (auto [t, name] : tensors) {
    check_dtype(*t, like.dtype(), op, name);
    check_shape(*t, like.shape(), op, name);
  }
}

// lse-shaped rows [B, Hq, T], f32 whatever the activations' dtype.
void check_rows(std::initializer_list<NamedTensor> tensors, const Shape& shape, const char* op) {
  for (auto [t, name] : tensors) {
    check_dtype(*t, DType::F32, op, name);
    check_shape(*t, shape, op, name);
  }
}

}  // namespace

AttentionDims check_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      AttentionMask mask, const Tensor& out, const Tensor& lse,
                                      FloatDTypes accepted) {
  const char* op = "attention_forward";
  const AttentionDims d = check_inputs(q, k, v, mask, accepted, op);
  check_like({{&out, "out"}}, q, op);
  check_rows({{&lse, "lse"}}, {d.B, d.Hq, d.T}, op);
  return d;
}

AttentionDims check_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                       const Tensor& v, const Tensor& out, const Tensor& lse,
                                       AttentionMask mask, const Tensor& dq, const Tensor& dk,
                                       const Tensor& dv, FloatDTypes accepted) {
  const char* op = "attention_backward";
  const AttentionDims d = check_inputs(q, k, v, mask, accepted, op);
  check_like({{&dout, "dout"}, {&out, "out"}, {&dq, "dq"}}, q, op);
  check_like({{&dk, "dk"}, {&dv, "dv"}}, k, op);
  check_rows({{&lse, "lse"}}, {d.B, d.Hq, d.T}, op);
  return d;
}

void check_attention_merge(const Tensor& out, const Tensor& lse, const Tensor& out_part,
                           const Tensor& lse_part, FloatDTypes accepted) {
  const char* op = "attention_merge";
  check_float_dtype(out, accepted, op, "out");
  TITAN_CHECK(out.dim() == 4) << op << ": out must be [B, T, Hq, hd], got "
                              << shape_string(out.shape());
  check_like({{&out_part, "out_part"}}, out, op);
  check_rows({{&lse, "lse"}, {&lse_part, "lse_part"}}, {out.size(0), out.size(2), out.size(1)},
             op);
}

}  // namespace titan::ops

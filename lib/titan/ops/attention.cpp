// Device-independent parts of ops/attention.h: the argument checks both backends make.
#include "titan/ops/attention.h"

#include "titan/core/threads.h"

#include <initializer_list>
#include <utility>

namespace titan::ops {
namespace {

using NamedTensor = std::pair<const Tensor*, const char*>;

// Positions or documents of both sides, or of neither: each an i32 tensor of its shape
// on q's device.
void check_pair(const Tensor& for_q, const Tensor& for_k, const Shape& q_shape,
                const Shape& k_shape, const Tensor& q, const char* q_name, const char* k_name,
                const char* op) {
  TITAN_CHECK(for_q.defined() == for_k.defined())
      << op << ": " << (for_q.defined() ? q_name : k_name) << " is given without "
      << (for_q.defined() ? k_name : q_name);
  if (!for_q.defined()) return;
  auto check = [&](const Tensor& t, const Shape& shape, const char* name) {
    check_dtype(t, DType::I32, op, name);
    check_shape(t, shape, op, name);
    TITAN_CHECK(t.device() == q.device())
        << op << ": " << name << " is on " << t.device() << ", q on " << q.device();
  };
  check(for_q, q_shape, q_name);
  check(for_k, k_shape, k_name);
}

// q [B, T, Hq, hd] in an accepted dtype; k, v [B, Tk, Hkv, hd] of q's dtype, Hq a multiple
// of Hkv, keys for every query, and as many as queries when causal without positions.
AttentionDims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v,
                           AttentionMask mask, FloatDTypes accepted,
                           const AttentionPositions* positions, const char* op) {
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
  // Causal by index needs the keys to be the queries' own; positions say where both sit.
  const bool positioned = positions && positions->has_positions();
  TITAN_CHECK(mask == AttentionMask::None || positioned || d.Tk == d.T)
      << op << ": causal attention needs as many keys as queries (or positions), got T " << d.T
      << ", Tk " << d.Tk;
  check_dtype(v, q.dtype(), op, "v");
  check_shape(v, k.shape(), op, "v");
  if (positions) {
    check_pair(positions->q_position, positions->k_position, {d.T}, {d.Tk}, q, "q_position",
               "k_position", op);
    check_pair(positions->q_document, positions->k_document, {d.B, d.T}, {d.B, d.Tk}, q,
               "q_document", "k_document", op);
  }
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
                                      FloatDTypes accepted, const AttentionPositions* positions) {
  const char* op = "attention_forward";
  const AttentionDims d = check_inputs(q, k, v, mask, accepted, positions, op);
  check_like({{&out, "out"}}, q, op);
  check_rows({{&lse, "lse"}}, {d.B, d.Hq, d.T}, op);
  return d;
}

AttentionDims check_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                       const Tensor& v, const Tensor& out, const Tensor& lse,
                                       AttentionMask mask, const Tensor& dq, const Tensor& dk,
                                       const Tensor& dv, FloatDTypes accepted,
                                       const AttentionPositions* positions) {
  const char* op = "attention_backward";
  const AttentionDims d = check_inputs(q, k, v, mask, accepted, positions, op);
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

AttentionMaskView attention_mask_view(AttentionMask mask, const AttentionPositions* positions,
                                      int64_t T, int64_t Tk) {
  AttentionMaskView view;
  view.causal = mask == AttentionMask::Causal;
  view.T = T;
  view.Tk = Tk;
  if (positions && positions->has_positions()) {
    view.q_pos = positions->q_position.data<int32_t>();
    view.k_pos = positions->k_position.data<int32_t>();
  }
  if (positions && positions->has_documents()) {
    view.q_doc = positions->q_document.data<int32_t>();
    view.k_doc = positions->k_document.data<int32_t>();
  }
  return view;
}

Tensor attention_forward_workspace(const Tensor& q, const Tensor& k) {
  const int64_t bytes = attention_forward_workspace_bytes(
      q.device(), q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), thread_count());
  return Tensor::empty({bytes}, DType::U8, q.device());
}

Tensor attention_backward_workspace(const Tensor& q, const Tensor& k) {
  const int64_t bytes = attention_backward_workspace_bytes(
      q.device(), q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), thread_count());
  return Tensor::empty({bytes}, DType::U8, q.device());
}

}  // namespace titan::ops

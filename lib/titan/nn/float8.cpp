#include "titan/nn/float8.h"

#include "titan/core/error.h"
#include "titan/nn/context_parallel.h"
#include "titan/nn/tensor_parallel.h"
#include "titan/ops/float8_gemm.h"
#include "titan/ops/matmul.h"

namespace titan::nn {

Float8Recipe float8_tensorwise() {
  Float8Recipe r;
  r.name = "tensorwise";
  r.input = r.weight = {true, DType::F8E4M3, false};
  r.grad_output = {true, DType::F8E5M2, false};
  r.weight_for_grad_input = r.weight;
  r.input_for_grad_weight = r.input;
  r.grad_output_for_grad_weight = r.grad_output;
  return r;
}

Float8Recipe float8_rowwise() {
  Float8Recipe r;
  r.name = "rowwise";
  r.input = r.weight = r.grad_output = {true, DType::F8E4M3, true};
  r.weight_for_grad_input = r.input_for_grad_weight = r.grad_output_for_grad_weight = r.input;
  r.power_of_two_scales = true;
  return r;
}

Float8Recipe float8_rowwise_with_gw_hp() {
  Float8Recipe r = float8_rowwise();
  r.name = "rowwise_with_gw_hp";
  r.weight_for_grad_input = {true, DType::F8E4M3, false};
  r.input_for_grad_weight = r.grad_output_for_grad_weight = Float8Cast{};
  return r;
}

Float8Recipe float8_recipe_named(const std::string& name) {
  for (Float8Recipe (*make)() : {float8_tensorwise, float8_rowwise, float8_rowwise_with_gw_hp}) {
    if (make().name == name) return make();
  }
  TITAN_FAIL() << "no Float8 recipe named " << name;
}

bool Float8Training::converts(const std::string& fqn, int64_t out_features,
                              int64_t in_features) const {
  if (out_features % 16 != 0 || in_features % 16 != 0) return false;
  for (const std::string& filter : filter_fqns) {
    if (fqn.find(filter) != std::string::npos) return false;
  }
  if (!auto_filter_small_kn) return true;
  // torchao's thresholds from its H100 measurements (its K, N are the weight's out, in).
  if (recipe.input.rowwise) {
    return !(in_features <= 2048 || out_features <= 1024 ||
             (in_features <= 4096 && out_features <= 2048));
  }
  return !(out_features <= 4096 && in_features <= 1024);
}

Float8Scales Float8Scales::rows(int64_t first, int64_t count) const {
  if (!per_row) return *this;
  return {scale.narrow(first, count), true};
}

namespace {

// Which pieces of a [rows, cols] operand other ranks hold.
struct Split {
  bool rows_on_tp = false, cols_on_tp = false, rows_on_cp = false;
};

}  // namespace

Tensor Float8Linear::scales_of(const Tensor& x, ops::Float8Axis axis, const Float8Cast& cast,
                               bool tp_shards, bool cp_shards) const {
  Tensor amax = Tensor::empty({ops::float8_scale_count(x, axis)}, DType::F32, x.device());
  ops::float8_amax(x, axis, amax);
  if (tp_shards && tp_.size() > 1) tp_.all_reduce(amax, RowReduce::Max);
  if (cp_shards && cp_.size() > 1) cp_.all_reduce_max(amax);
  Tensor scale = Tensor::empty(amax.shape(), DType::F32, x.device());
  ops::float8_scales(amax, cast.format, recipe_.power_of_two_scales, scale);
  return scale;
}

namespace {

// The groups an amax along `axis` of an operand split as `split` reduces over.
bool reduce_tp(ops::Float8Axis axis, Split split) {
  switch (axis) {
    case ops::Float8Axis::Tensor: return split.rows_on_tp || split.cols_on_tp;
    case ops::Float8Axis::Rows: return split.cols_on_tp;
    case ops::Float8Axis::Columns: return split.rows_on_tp;
  }
  return false;
}
bool reduce_cp(ops::Float8Axis axis, Split split) {
  return axis != ops::Float8Axis::Rows && split.rows_on_cp;
}

Tensor round_trip(const Tensor& x, const Tensor& scale, ops::Float8Axis axis, DType format) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  ops::float8_round_trip(x, scale, axis, format, y);
  return y;
}

// x cast with `scale` along `axis`: its round trip, or on tensor cores its fp8 bytes (of x^T
// when transposed: the scales then run along q's rows all the same).
GemmOperand cast_operand(const Tensor& x, const Tensor& scale, ops::Float8Axis axis,
                         DType format, bool tensor_cores, bool transposed) {
  if (!tensor_cores) return {round_trip(x, scale, axis, format), {}, {}};
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  if (transposed) {
    Tensor q = Tensor::empty({cols, rows}, format, x.device());
    ops::float8_quantize_transposed(x, scale, axis, q);
    return {{}, q, scale};
  }
  Tensor q = Tensor::empty({rows, cols}, format, x.device());
  ops::float8_quantize(x, scale, axis, q);
  return {{}, q, scale};
}

}  // namespace

GemmOperand Float8Linear::cast_whole(const Tensor& x, const Float8Cast& cast,
                                     ops::Float8Axis rowwise_axis, bool rows_on_tp,
                                     bool cols_on_tp, bool rows_on_cp, bool transposed,
                                     bool tensor_cores) const {
  if (!cast.enabled) return {x, {}, {}};
  const ops::Float8Axis axis = cast.rowwise ? rowwise_axis : ops::Float8Axis::Tensor;
  const Split split{rows_on_tp, cols_on_tp, rows_on_cp};
  const Tensor scale =
      scales_of(x, axis, cast, reduce_tp(axis, split), reduce_cp(axis, split));
  return cast_operand(x, scale, axis, cast.format, tensor_cores, transposed);
}

GemmOperand Float8Linear::forward_weight(const Tensor& weight, bool precast) const {
  if (precast && !tensor_cores_) return {weight, {}, {}};
  return cast_whole(weight, recipe_.weight, ops::Float8Axis::Rows,
                    role_ == TensorParallelRole::Column, role_ == TensorParallelRole::Row, false,
                    /*transposed=*/false, tensor_cores_);
}

GemmOperand Float8Linear::grad_input_weight(const Tensor& weight, bool precast) const {
  if (precast && !tensor_cores_) return {weight, {}, {}};
  return cast_whole(weight, recipe_.weight_for_grad_input, ops::Float8Axis::Columns,
                    role_ == TensorParallelRole::Column, role_ == TensorParallelRole::Row, false,
                    /*transposed=*/true, tensor_cores_);
}

Float8Scales Float8Linear::activation_scales(const Tensor& piece, const Float8Cast& cast,
                                             bool contraction_on_tp, bool rows_gathered) const {
  if (!cast.enabled) return {};
  const Split split{rows_gathered && tp_.sequence_parallel(), contraction_on_tp, true};
  if (!cast.rowwise) {
    const ops::Float8Axis axis = ops::Float8Axis::Tensor;
    return {scales_of(piece, axis, cast, reduce_tp(axis, split), reduce_cp(axis, split)), false};
  }
  // Per row over the contraction dim: a collective only when tp splits that dim.
  if (!contraction_on_tp) return {};
  return {scales_of(piece, ops::Float8Axis::Rows, cast, true, false), true};
}

Float8Scales Float8Linear::input_scales(const Tensor& x_piece) const {
  return activation_scales(x_piece, recipe_.input, role_ == TensorParallelRole::Row,
                           role_ == TensorParallelRole::Column);
}

Float8Scales Float8Linear::grad_output_scales(const Tensor& dy_piece) const {
  return activation_scales(dy_piece, recipe_.grad_output, role_ == TensorParallelRole::Column,
                           role_ == TensorParallelRole::Row);
}

GemmOperand Float8Linear::cast_rows(const Tensor& rows, const Float8Scales& scales,
                                    const Float8Cast& cast) const {
  if (!cast.enabled) return {rows, {}, {}};
  if (scales.scale.defined()) {
    return cast_operand(rows, scales.scale,
                        scales.per_row ? ops::Float8Axis::Rows : ops::Float8Axis::Tensor,
                        cast.format, tensor_cores_, false);
  }
  // Per-row scales of rows held whole: local to the block.
  return cast_operand(rows, scales_of(rows, ops::Float8Axis::Rows, cast, false, false),
                      ops::Float8Axis::Rows, cast.format, tensor_cores_, false);
}

GemmOperand Float8Linear::cast_input(const Tensor& x_rows, const Float8Scales& scales) const {
  return cast_rows(x_rows, scales, recipe_.input);
}

GemmOperand Float8Linear::cast_grad_output(const Tensor& dy_rows,
                                           const Float8Scales& scales) const {
  return cast_rows(dy_rows, scales, recipe_.grad_output);
}

namespace {

// fp8 tensor cores take a contraction dim that is a multiple of 16: the tokens, here.
int64_t token_rows(const Tensor& t) { return t.numel() / t.size(-1); }

}  // namespace

GemmOperand Float8Linear::grad_weight_output(const Tensor& dy) const {
  return cast_whole(dy, recipe_.grad_output_for_grad_weight, ops::Float8Axis::Columns, false,
                    role_ == TensorParallelRole::Column, true, /*transposed=*/true,
                    tensor_cores_ && token_rows(dy) % 16 == 0);
}

GemmOperand Float8Linear::grad_weight_input(const Tensor& x) const {
  return cast_whole(x, recipe_.input_for_grad_weight, ops::Float8Axis::Columns, false,
                    role_ == TensorParallelRole::Row, true, /*transposed=*/true,
                    tensor_cores_ && token_rows(x) % 16 == 0);
}

namespace {

void check_pair(const GemmOperand& a, const GemmOperand& b, const char* gemm) {
  TITAN_CHECK(a.fp8() == b.fp8()) << "Float8 " << gemm << ": one operand is fp8 bytes and the "
                                  << "other is not";
}

}  // namespace

void gemm_forward(const GemmOperand& x, const GemmOperand& weight, Tensor& y) {
  check_pair(x, weight, "forward");
  if (!x.fp8()) return ops::linear_forward(x.value, weight.value, y);
  ops::float8_gemm(x.q, x.scale, weight.q, weight.scale, y, ops::Accumulate::No);
}

void gemm_backward_input(const GemmOperand& dy, const GemmOperand& weight, Tensor& dx,
                         ops::Accumulate accumulate) {
  check_pair(dy, weight, "grad_input");
  if (!dy.fp8()) return ops::linear_backward_input(dy.value, weight.value, dx, accumulate);
  ops::float8_gemm(dy.q, dy.scale, weight.q, weight.scale, dx, accumulate);  // weight: W^T's
}

void gemm_backward_weight(const GemmOperand& dy, const GemmOperand& x, Tensor& dweight) {
  check_pair(dy, x, "grad_weight");
  if (!dy.fp8()) return ops::linear_backward_weight(dy.value, x.value, dweight);
  ops::float8_gemm(dy.q, dy.scale, x.q, x.scale, dweight, ops::Accumulate::Yes);  // dy^T, x^T
}

}  // namespace titan::nn

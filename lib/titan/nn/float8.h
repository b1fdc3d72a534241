// Float8 training of linear layers (docs/float8.md): which linears convert, how each of a
// converted linear's three GEMMs casts its operands (torchao's recipes), and the scales of
// activation operands, which the modules compute before a GEMM's row blocks run.
//
// A linear y = x W^T (x [M, K], W [N, K]) multiplies:
//   forward       y  = x  . W^T     x per row, W per row          (rowwise: over K)
//   grad_input    dx = dy . W       dy per row, W per column      (over N)
//   grad_weight   dW = dy^T . x     dy per column, x per column   (over M, the tokens)
// Tensorwise casts use one scale per operand instead. Numerics: ops/float8.h.
//
// Layouts: an amax covers the whole operand of the one-rank model, so it is reduced (max)
// over every rank holding another piece of its group: the tp ranks when tensor parallelism
// shards the operand's columns (or its rows, for sequence-parallel activations before their
// gather), and the cp ranks for activations, whose tokens the cp ranks share. Every layout
// then casts exactly as one rank does. Those reductions are collectives, so they run before a
// GEMM's row blocks (ranks visit asynchronous tensor parallelism's blocks in different
// orders); inside a block only local casts run.
#pragma once

#include <string>
#include <vector>

#include "titan/core/tensor.h"
#include "titan/ops/float8.h"

namespace titan::nn {

class TensorParallel;
class ContextParallel;

// How one GEMM operand is cast: not at all (high precision), or to `format` with one scale
// (tensorwise) or one per row or column (rowwise: along the GEMM's contraction dim).
struct Float8Cast {
  bool enabled = false;
  DType format = DType::F8E4M3;
  bool rowwise = false;
};

struct Float8Recipe {
  const char* name = "tensorwise";
  Float8Cast input, weight, grad_output;  // forward (input, weight); grad_input (grad_output)
  Float8Cast weight_for_grad_input;
  Float8Cast input_for_grad_weight, grad_output_for_grad_weight;
  bool power_of_two_scales = false;
};

// torchao's recipes: tensorwise (e4m3 inputs and weights, e5m2 gradients, one scale each);
// rowwise (e4m3 throughout, per row or column, power-of-two scales); rowwise_with_gw_hp
// (rowwise forward; grad_input with a tensorwise weight; grad_weight in high precision).
Float8Recipe float8_tensorwise();
Float8Recipe float8_rowwise();
Float8Recipe float8_rowwise_with_gw_hp();
// One of the three by its name (quantize.linear.float8.recipe_name's spelling).
Float8Recipe float8_recipe_named(const std::string& name);

// quantize.linear.float8 as the model applies it.
struct Float8Training {
  Float8Recipe recipe;
  // A linear whose fully qualified name contains one of these stays in high precision.
  std::vector<std::string> filter_fqns;
  // torchao's size filter of the recipe (filter_fqns entry auto_filter_small_kn): linears
  // too small to gain on an H100 stay in high precision.
  bool auto_filter_small_kn = false;
  // quantize.linear.float8.emulate: a GPU computes as the CPU does (round trips, its own
  // GEMM) instead of on fp8 tensor cores. CPU ranks always emulate.
  bool emulate = false;

  // Whether the linear `fqn` with a global weight [out, in] converts: both dims divisible by
  // 16 (fp8 tensor cores), not filtered by name or size.
  bool converts(const std::string& fqn, int64_t out_features, int64_t in_features) const;
};

// An operand of a converted linear's GEMM as prepared for it: `value`, what the f32 or bf16
// GEMM multiplies (the operand itself, or its float8 round trip when emulated); or, on fp8
// tensor cores, `q`, its fp8 bytes laid out K-major for that GEMM (ops/float8_gemm.h), with
// `scale` ([1], or one per row of q).
struct GemmOperand {
  Tensor value;
  Tensor q, scale;
  bool fp8() const { return q.defined(); }
};

// The scales of an activation operand prepared before its row blocks: undefined when each
// block casts its own rows (per-row scales of rows whose columns this rank holds whole).
struct Float8Scales {
  Tensor scale;          // f32 [1], or [rows] of the operand when per_row
  bool per_row = false;
  // The scales of rows [first, first + count).
  Float8Scales rows(int64_t first, int64_t count) const;
};

// Which dims of a converted linear's weight tensor parallelism splits.
enum class TensorParallelRole { Replicated, Column, Row };

// The casts of one converted linear with the groups its amaxes reduce over. Emulated (the
// CPU, or a GPU asked to: values are round trips), or on fp8 tensor cores (`tensor_cores`:
// operands are fp8 bytes for ops::float8_gemm, from the same scales).
class Float8Linear {
 public:
  Float8Linear(Float8Recipe recipe, TensorParallelRole role, const TensorParallel& tp,
               const ContextParallel& cp, bool tensor_cores = false)
      : recipe_(recipe), role_(role), tp_(tp), cp_(cp), tensor_cores_(tensor_cores) {}

  const Float8Recipe& recipe() const { return recipe_; }
  bool tensor_cores() const { return tensor_cores_; }

  // The weight as the forward and grad_input GEMMs read it. precast: `weight` is already a
  // tensorwise e4m3 round trip (FSDP's float8 all-gather), which the emulation takes as it
  // is (on tensor cores it is cast again: its values are on the fp8 grid already).
  GemmOperand forward_weight(const Tensor& weight, bool precast) const;
  GemmOperand grad_input_weight(const Tensor& weight, bool precast) const;

  // Scales of the input or the output gradient from this rank's piece of it: the rows it
  // holds before the caller gathers them over tp (sequence parallel), or all of them.
  Float8Scales input_scales(const Tensor& x_piece) const;
  Float8Scales grad_output_scales(const Tensor& dy_piece) const;

  // A row block of the input or output gradient, cast with scales from the calls above.
  GemmOperand cast_input(const Tensor& x_rows, const Float8Scales& scales) const;
  GemmOperand cast_grad_output(const Tensor& dy_rows, const Float8Scales& scales) const;

  // The grad_weight GEMM's operands, from all rows of this microbatch (on tensor cores
  // transposed, tokens last; emulated when the token count is not a multiple of 16).
  GemmOperand grad_weight_output(const Tensor& dy) const;
  GemmOperand grad_weight_input(const Tensor& x) const;

 private:
  // amax reduced over tp when `tp_shards` and over cp when `cp_shards`, then scales.
  Tensor scales_of(const Tensor& x, ops::Float8Axis axis, const Float8Cast& cast, bool tp_shards,
                   bool cp_shards) const;
  Float8Scales activation_scales(const Tensor& piece, const Float8Cast& cast,
                                 bool contraction_on_tp, bool rows_gathered) const;
  GemmOperand cast_rows(const Tensor& rows, const Float8Scales& scales,
                        const Float8Cast& cast) const;
  // x [rows, cols] cast whole (per row or column along rowwise_axis when rowwise), its pieces
  // elsewhere as the flags say; on tensor cores `transposed` gives x^T's bytes.
  GemmOperand cast_whole(const Tensor& x, const Float8Cast& cast, ops::Float8Axis rowwise_axis,
                         bool rows_on_tp, bool cols_on_tp, bool rows_on_cp, bool transposed,
                         bool tensor_cores) const;

  Float8Recipe recipe_;
  TensorParallelRole role_;
  const TensorParallel& tp_;
  const ContextParallel& cp_;
  bool tensor_cores_;
};

// The three GEMMs of a linear on prepared operands (both fp8, or both values).
void gemm_forward(const GemmOperand& x, const GemmOperand& weight, Tensor& y);
void gemm_backward_input(const GemmOperand& dy, const GemmOperand& weight, Tensor& dx,
                         ops::Accumulate accumulate);
void gemm_backward_weight(const GemmOperand& dy, const GemmOperand& x, Tensor& dweight);

}  // namespace titan::nn

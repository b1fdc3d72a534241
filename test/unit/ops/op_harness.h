// The op-case table and what each op plugs into it (docs/design.md, "Tests").
//
// op_cases.cpp holds one table of cases: op name, the op's dimensions (a struct of named
// fields per op, below), and flags (named per op, below). Each <op>_test.cpp registers an
// OpHarness: how to make inputs, a naive float64 reference of the forward, and how to run
// the op's forward and backward. op_case_test.cpp runs every row: forward against the
// reference, backward against central differences of the reference (support/gradient_check.h).
// A new backend compares itself with the CPU through the same rows: the CUDA table is
// test/unit/ops/cuda/op_case_cuda_test.cpp. The registry lives in op_harness.cpp, which both
// test binaries link.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "support/gradient_check.h"
#include "titan/core/tensor.h"

namespace titan::testing {

// Each op's dimensions. values() lists them in the order label() prints them.
struct RmsNormDims {
  int64_t N, D;  // N rows of D
  std::vector<int64_t> values() const { return {N, D}; }
};
struct LinearDims {
  int64_t N, in, out;  // x [N, in], weight [out, in]
  std::vector<int64_t> values() const { return {N, in, out}; }
};
struct EmbeddingDims {
  int64_t N, V, D;  // N tokens, a table of V rows of D
  std::vector<int64_t> values() const { return {N, V, D}; }
};
struct RopeDims {
  int64_t B, T, H, hd;  // x [B, T, H, hd]
  std::vector<int64_t> values() const { return {B, T, H, hd}; }
};
struct SwigluDims {
  int64_t N, F;  // a, b [N, F]
  std::vector<int64_t> values() const { return {N, F}; }
};
struct AttentionDims {
  int64_t B, T, Hq, Hkv, hd;  // q [B, T, Hq, hd], k and v [B, T, Hkv, hd]
  std::vector<int64_t> values() const { return {B, T, Hq, Hkv, hd}; }
};
struct CrossEntropyDims {
  int64_t N, D, V;    // h [N, D], weight [V, D]
  int64_t chunk = 0;  // tokens per chunk of the workspace; 0: the default budget's
  std::vector<int64_t> values() const {
    if (chunk == 0) return {N, D, V};
    return {N, D, V, chunk};
  }
};
struct CrossEntropyLogitsDims {
  int64_t N, V;  // logits [N, V]
  std::vector<int64_t> values() const { return {N, V}; }
};
struct AdamWDims {
  int64_t R, C, step;  // every tensor [R, C]; the step counts from 1
  std::vector<int64_t> values() const { return {R, C, step}; }
};
struct CastDims {
  int64_t N, D;  // x [N, D]
  std::vector<int64_t> values() const { return {N, D}; }
};
using OpDims = std::variant<RmsNormDims, LinearDims, EmbeddingDims, RopeDims, SwigluDims,
                            AttentionDims, CrossEntropyDims, CrossEntropyLogitsDims, AdamWDims,
                            CastDims>;

// Flags of the rows, per op; label() prints their value.
// attention: no mask (full attention), else causal.
inline constexpr uint32_t kFullAttention = 1;
// cross_entropy and cross_entropy_logits: every third label (n % 3 == 1) is kIgnoreIndex;
// labels are i64 (torch's dtype), else i32.
inline constexpr uint32_t kSomeIgnored = 1;
inline constexpr uint32_t kLabelsI64 = 2;
// adamw: beta1 = 0.3, so torch's lerp takes its other form (weight >= 0.5).
inline constexpr uint32_t kSmallBeta1 = 1;
// cast: the flags are the destination DType, uint32_t(DType::BF16) and so on.

struct OpCase {
  std::string op;
  OpDims dims;
  uint32_t flags = 0;
  // The op's dimensions; a harness asks for its own op's.
  template <class Dims>
  const Dims& dims_as() const {
    return std::get<Dims>(dims);
  }
  std::string label() const;  // "rmsnorm_3x7" style, for test names
};

struct OpHarness {
  // Inputs in f32 (or integer ids); the ones marked differentiable get gradients checked.
  std::function<std::vector<Tensor>(const OpCase&, uint64_t seed)> make_inputs;
  std::vector<std::string> input_names;
  std::vector<bool> differentiable;
  // Float64 reference of the forward output, from float64 copies of the inputs.
  std::function<Values(const OpCase&, const std::vector<Values>&)> reference;
  // The op under test: forward output, and input gradients for an output gradient dy
  // (one tensor per input; undefined for inputs that are not differentiable).
  std::function<Tensor(const OpCase&, const std::vector<Tensor>&)> forward;
  std::function<std::vector<Tensor>(const OpCase&, const std::vector<Tensor>&, const Tensor& dy)>
      backward;  // empty: the op has no backward (optimizer steps, casts)
  double forward_tolerance = 1e-5;
  GradCheckOptions grad_check;
  // The CUDA table (test/unit/ops/cuda/op_case_cuda_test.cpp) runs each row on the GPU against
  // the CPU op: in f32 within cuda_f32_tolerance, and, when bf16_tolerance > 0, again with
  // the float inputs rounded to bf16 (the CPU running f32 on the rounded values), within
  // bf16_tolerance. The CPU table runs that bf16 pass on the CPU too: the op on bf16
  // tensors against itself on f32 copies. Both are relative to max(|f32 run|, 1) per element.
  double cuda_f32_tolerance = 1e-5;
  double bf16_tolerance = 0;  // 0: the op takes no bf16
};

// The bf16 passes' inputs: a host f32 tensor stored as `dtype` (bf16: rounded to nearest
// even; others as they are), and what the f32 run takes: f32 copies of bf16 values (exact),
// everything else as it is.
Tensor stored_as(const Tensor& host, DType dtype);
Tensor f32_copy(const Tensor& host);

// Outputs of an op under test live where its inputs live, in their float dtype: the CPU
// table passes f32 CPU tensors, the CUDA table the same rows as f32 or bf16 GPU tensors.
// Statistics kept for a backward (rstd, lse) and losses are f32 on every path.
inline Tensor empty_like_input(const Tensor& input, const Shape& shape) {
  return Tensor::empty(shape, input.dtype(), input.device());
}
inline Tensor zeros_like_input(const Tensor& input, const Shape& shape) {
  return Tensor::zeros(shape, input.dtype(), input.device());
}
inline Tensor f32_beside(const Tensor& input, const Shape& shape) {
  return Tensor::empty(shape, DType::F32, input.device());
}
inline Tensor f32_zeros_beside(const Tensor& input, const Shape& shape) {
  return Tensor::zeros(shape, DType::F32, input.device());
}

// Registration happens at static initialization; the table is read when tests are listed.
bool register_op_harness(const std::string& op, OpHarness harness);
const OpHarness& op_harness(const std::string& op);
std::vector<OpCase> op_cases();

}  // namespace titan::testing

// The op-case table and what each op plugs into it (docs/design.md, "Tests").
//
// op_cases.cpp holds one table of cases: op name, the op's dimensions (their meaning is
// the op's, documented beside its harness), and flags. Each <op>_test.cpp registers an
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
#include <vector>

#include "support/gradient_check.h"
#include "titan/core/tensor.h"

namespace titan::testing {

struct OpCase {
  std::string op;
  std::vector<int64_t> dims;
  uint32_t flags = 0;
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
  // the CPU op: in f32 within cuda_f32_tolerance, and, when cuda_bf16_tolerance > 0, again
  // with the float inputs rounded to bf16 (the CPU running f32 on the rounded values),
  // within cuda_bf16_tolerance. Both are relative to max(|cpu|, 1) per element.
  double cuda_f32_tolerance = 1e-5;
  double cuda_bf16_tolerance = 0;  // 0: the op takes no bf16 on the GPU
};

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

// The op-case table and what each op plugs into it (STYLE.md, "From ggml").
//
// op_cases.cpp holds one table of cases: op name, the op's dimensions (their meaning is
// the op's, documented beside its harness), and flags. Each <op>_test.cpp registers an
// OpHarness: how to make inputs, a naive float64 reference of the forward, and how to run
// the op's forward and backward. op_case_test.cpp runs every row: forward against the
// reference, backward against central differences of the reference (support/gradient_check.h).
// A new backend compares itself with the CPU through the same rows.
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
};

// Registration happens at static initialization; the table is read when tests are listed.
bool register_op_harness(const std::string& op, OpHarness harness);
const OpHarness& op_harness(const std::string& op);
std::vector<OpCase> op_cases();

}  // namespace titan::testing

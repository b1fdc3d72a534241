// What the checks every backend shares know about backends: the float dtypes each one
// keeps tensors in. Each op's checks live once, in ops/<op>.cpp, and both backends call
// them before any work, so that a bad call fails with the same message on every device;
// a backend adds only what is its own (where the tensors are, limits of its kernels).
#pragma once

#include "titan/core/tensor.h"

namespace titan::ops {

// The float dtypes a backend stores an op's tensors in: both store activations in f32 or
// bf16 and compute in f32 (the CPU's rule: ops/cpu/bf16_storage.h). A check given the
// backend's set rejects the same calls the backend's kernels cannot run, in the same words.
enum class FloatDTypes { F32, F32OrBF16 };

namespace cpu {
inline constexpr FloatDTypes kFloatDTypes = FloatDTypes::F32OrBF16;
}  // namespace cpu
namespace cuda {
inline constexpr FloatDTypes kFloatDTypes = FloatDTypes::F32OrBF16;
}  // namespace cuda

bool accepts(FloatDTypes accepted, DType dtype);
// "f32" or "f32 or bf16", as the errors say it.
const char* float_dtypes_name(FloatDTypes accepted);

// t is defined and holds one of the accepted dtypes:
//   "<op>: <arg> is f16, expected f32 or bf16"
void check_float_dtype(const Tensor& t, FloatDTypes accepted, const char* op, const char* arg);

}  // namespace titan::ops

// Elementwise arithmetic the trainer needs between ops: zeroing and scaling gradients,
// accumulating microbatches. Every output element depends on the same
// element of the inputs only, so results are exact per element and thread-independent.
//
//   fill(y, value)          y = value
//   scale(y, factor)        y = y * factor
//   add(a, b, y)            y = a + b        (y may be a or b)
//   accumulate(x, y)        y = y + x        (torch's y.add_(x))
//   axpy(alpha, x, y)       y = y + alpha * x
//
// Shapes: any, all operands the same element count. No backward. Copies are
// titan::copy_tensor (core/copy.h), which also crosses devices.
// Both backends take f32 or bf16 for each operand independently (a bf16 gradient
// accumulated into an f32 one, say): they compute in f32, each operation rounded on its
// own (no fused multiply-add), and round once to the output's dtype. All operands on one
// device. On f32 operands the GPU gives the CPU's bits.
#pragma once

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

// The checks both backends make first (ops/elementwise.cpp), given the backend's float
// dtypes: the output y of one of them; each input of one of them, on y's device, with as
// many elements as y (shapes may differ: a flat view of a 2-D gradient is fine).
void check_elementwise_output(const Tensor& y, FloatDTypes accepted, const char* op);
void check_elementwise_input(const Tensor& x, const Tensor& y, FloatDTypes accepted,
                             const char* op, const char* arg);

namespace cpu {
void fill(Tensor& y, float value);
void scale(Tensor& y, float factor);
void add(const Tensor& a, const Tensor& b, Tensor& y);
void accumulate(const Tensor& x, Tensor& y);
void axpy(float alpha, const Tensor& x, Tensor& y);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void fill(Tensor& y, float value);
void scale(Tensor& y, float factor);
void add(const Tensor& a, const Tensor& b, Tensor& y);
void accumulate(const Tensor& x, Tensor& y);
void axpy(float alpha, const Tensor& x, Tensor& y);
}  // namespace cuda
#endif

inline void fill(Tensor& y, float value) { TITAN_DISPATCH_CPU_CUDA(y, fill, y, value); }
inline void scale(Tensor& y, float factor) { TITAN_DISPATCH_CPU_CUDA(y, scale, y, factor); }
inline void add(const Tensor& a, const Tensor& b, Tensor& y) {
  TITAN_DISPATCH_CPU_CUDA(y, add, a, b, y);
}
inline void accumulate(const Tensor& x, Tensor& y) {
  TITAN_DISPATCH_CPU_CUDA(y, accumulate, x, y);
}
inline void axpy(float alpha, const Tensor& x, Tensor& y) {
  TITAN_DISPATCH_CPU_CUDA(y, axpy, alpha, x, y);
}

}  // namespace titan::ops

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
// Shapes: any, all operands the same element count; f32. No backward. Copies are
// titan::copy_tensor (core/copy.h), which also crosses devices.
#pragma once

#include "titan/ops/dispatch.h"

namespace titan::ops {
namespace cpu {
void fill(Tensor& y, float value);
void scale(Tensor& y, float factor);
void add(const Tensor& a, const Tensor& b, Tensor& y);
void accumulate(const Tensor& x, Tensor& y);
void axpy(float alpha, const Tensor& x, Tensor& y);
}  // namespace cpu

inline void fill(Tensor& y, float value) { TITAN_DISPATCH_CPU(y, fill, y, value); }
inline void scale(Tensor& y, float factor) { TITAN_DISPATCH_CPU(y, scale, y, factor); }
inline void add(const Tensor& a, const Tensor& b, Tensor& y) {
  TITAN_DISPATCH_CPU(y, add, a, b, y);
}
inline void accumulate(const Tensor& x, Tensor& y) { TITAN_DISPATCH_CPU(y, accumulate, x, y); }
inline void axpy(float alpha, const Tensor& x, Tensor& y) {
  TITAN_DISPATCH_CPU(y, axpy, alpha, x, y);
}

}  // namespace titan::ops

// SwiGLU gate of Llama's feed-forward: w2(silu(w1 x) * w3 x). This op is the middle part,
// elementwise on the two projections a = x w1^T and b = x w3^T:
//   y = silu(a) * b,  silu(a) = a * sigmoid(a)
//   da = dy * b * sigmoid(a) * (1 + a * (1 - sigmoid(a)))      db = dy * silu(a)
// Shapes: a, b, y, dy, da, db [N, F] (any shape, all the same). Keeps nothing: the
// backward reads a and b, which the caller keeps. Gradients are written (=).
// Both backends take all five tensors f32 or all bf16, computing in f32.
#pragma once

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

// The checks both backends make first (ops/swiglu.cpp): a in one of the backend's float
// dtypes, every other tensor of a's shape and dtype.
void check_swiglu_forward(const Tensor& a, const Tensor& b, const Tensor& y,
                          FloatDTypes accepted);
void check_swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, const Tensor& da,
                           const Tensor& db, FloatDTypes accepted);

namespace cpu {
void swiglu_forward(const Tensor& a, const Tensor& b, Tensor& y);
void swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, Tensor& da, Tensor& db);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void swiglu_forward(const Tensor& a, const Tensor& b, Tensor& y);
void swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, Tensor& da, Tensor& db);
}  // namespace cuda
#endif

inline void swiglu_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  TITAN_DISPATCH_CPU_CUDA(a, swiglu_forward, a, b, y);
}
inline void swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, Tensor& da,
                            Tensor& db) {
  TITAN_DISPATCH_CPU_CUDA(a, swiglu_backward, dy, a, b, da, db);
}

}  // namespace titan::ops

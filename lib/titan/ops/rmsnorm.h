// RMSNorm (Llama's pre-norm), one row at a time:
//   rstd = 1 / sqrt(mean(x^2) + eps)          y = x * rstd * weight
// Shapes: x, y, dy, dx [N, D]; weight, dweight [D]; rstd [N], kept for the backward.
// Backward:
//   dx = rstd * (weight*dy) - rstd^3 / D * x * sum(weight*dy*x)   (= or += per Accumulate)
//   dweight += sum over rows of dy * x * rstd                        (always +=)
// Both backends take x, weight, y, dy, dx all f32 or all bf16 (the storage of activations),
// rstd f32, and dweight f32 or the activations' dtype; the GPU sums in f32, the CPU in
// double.
// Its dweight is deterministic: each column is summed over rows in a fixed order, without
// atomics, so the same inputs give the same bits on every run.
#pragma once

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

// The checks both backends make first (ops/rmsnorm.cpp), given the backend's float dtypes:
// x, weight, y, dy, dx in one of them, all alike; rstd f32; dweight f32 or x's dtype.
void check_rmsnorm_forward(const Tensor& x, const Tensor& weight, const Tensor& y,
                           const Tensor& rstd, FloatDTypes accepted);
void check_rmsnorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                  const Tensor& rstd, const Tensor& dx, FloatDTypes accepted);
void check_rmsnorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd,
                                   const Tensor& dweight, FloatDTypes accepted);

namespace cpu {
void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight,
                            const Tensor& rstd, Tensor& dx, Accumulate accumulate);
void rmsnorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd,
                             Tensor& dweight);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight,
                            const Tensor& rstd, Tensor& dx, Accumulate accumulate);
void rmsnorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd,
                             Tensor& dweight);
}  // namespace cuda
#endif

inline void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y,
                            Tensor& rstd) {
  TITAN_DISPATCH_CPU_CUDA(x, rmsnorm_forward, x, weight, eps, y, rstd);
}
inline void rmsnorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                   const Tensor& rstd, Tensor& dx, Accumulate accumulate) {
  TITAN_DISPATCH_CPU_CUDA(x, rmsnorm_backward_input, dy, x, weight, rstd, dx, accumulate);
}
inline void rmsnorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd,
                                    Tensor& dweight) {
  TITAN_DISPATCH_CPU_CUDA(x, rmsnorm_backward_weight, dy, x, rstd, dweight);
}

}  // namespace titan::ops

// One AdamW step on one parameter tensor, torch.optim.AdamW's semantics (decoupled
// weight decay, bias correction, no amsgrad). With step t counted from 1 (the caller
// increments before the call, as torch does), for every element:
//
//   p  = p * (1 - lr*wd)                         decoupled decay, applied to every tensor
//   m  = m + (1 - beta1) * (g - m)               torch's exp_avg.lerp_(g, 1 - beta1)
//   v  = v * beta2 + (1 - beta2) * g * g         torch's exp_avg_sq.mul_(beta2).addcmul_
//   p  = p + (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// This is torch's single-tensor (non-fused) path, in its order of operations: the
// per-step scalars (1 - lr*wd, 1 - beta, the bias corrections, the step size) are made in
// double, as torch makes them in Python, and cast to float once; the per-element
// arithmetic is float, as torch's CPU kernels do it for f32 tensors, each operation
// rounded on its own (the build targets baseline x86-64: no FMA contraction), like torch's
// scalar kernels. torch's AVX2 kernels may fuse a multiply-add (its vectorized lerp does),
// so a comparison with torch holds to an ulp or so per step, not to the bit.
//
// Shapes: param, grad, exp_avg, exp_avg_sq all f32, the same shape (any); updated in
// place except grad. Nothing is kept; the step has no backward.
#pragma once

#include "titan/ops/dispatch.h"

namespace titan::ops {

// torchtitan's defaults (notes/torchtitan-config.md, section 6).
struct AdamWOptions {
  double lr = 8e-4;  // the scheduled rate for this step
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

namespace cpu {
void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWOptions& options, int64_t step);
}  // namespace cpu

inline void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                       const AdamWOptions& options, int64_t step) {
  TITAN_DISPATCH_CPU(param, adamw_step, param, grad, exp_avg, exp_avg_sq, options, step);
}

}  // namespace titan::ops

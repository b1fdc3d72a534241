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
//
// adamw_step_multi_tensor steps a list of parameters with one options and step: on the
// CPU it is the single-tensor step in list order; on the GPU one launch covers up to
// kAdamWTensorsPerLaunch tensors (their addresses and sizes travel in the kernel's
// arguments), instead of one launch per tensor. Every element is independent, so both
// give each tensor exactly the bits of adamw_step. (Lists are std::vector, not std::span:
// the CUDA sources build as C++17.)
//
// The CUDA backend computes every element with the CPU's operations in the CPU's order,
// each rounded on its own (the _rn intrinsics stop nvcc from fusing multiply-adds), from
// the same float scalars (adamw_scalars below): its results are the CPU's bit for bit.
#pragma once

#include <cmath>
#include <vector>

#include "titan/ops/dispatch.h"

namespace titan::ops {

// torchtitan's defaults (components/optimizer.py and its job config).
struct AdamWOptions {
  double lr = 8e-4;  // the scheduled rate for this step
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

// The per-step scalars torch computes in Python (double) and hands to its kernels as
// float; every backend takes them from here so that they agree to the bit.
struct AdamWScalars {
  float decay;               // 1 - lr * wd
  float one_minus_beta1;     // lerp's weight
  bool lerp_small_weight;    // torch's lerp(self, end, weight) picks its form by |weight| < 0.5
  float beta1_from_weight;   // torch's opmath_t(1) - weight
  float beta2;
  float one_minus_beta2;
  float neg_step_size;       // -lr / (1 - beta1^t)
  float bias_correction2_sqrt;
  float eps;
};

inline AdamWScalars adamw_scalars(const AdamWOptions& options, int64_t step) {
  const double t = double(step);
  AdamWScalars s;
  s.decay = float(1.0 - options.lr * options.weight_decay);
  s.one_minus_beta1 = float(1.0 - options.beta1);
  s.lerp_small_weight = std::fabs(s.one_minus_beta1) < 0.5f;
  s.beta1_from_weight = 1.0f - s.one_minus_beta1;
  s.beta2 = float(options.beta2);
  s.one_minus_beta2 = float(1.0 - options.beta2);
  const double bias_correction1 = 1.0 - std::pow(options.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(options.beta2, t);
  s.neg_step_size = float(-(options.lr / bias_correction1));
  s.bias_correction2_sqrt = float(std::sqrt(bias_correction2));
  s.eps = float(options.eps);
  return s;
}

// Most tensors one CUDA launch of adamw_step_multi_tensor takes (kernel arguments: 4 KiB).
inline constexpr int kAdamWTensorsPerLaunch = 48;

// The checks both backends make first (ops/adamw.cpp): step >= 1, the lists of one length,
// and every param, grad, exp_avg, exp_avg_sq f32 and of its param's shape.
void check_adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                      const Tensor& exp_avg_sq, int64_t step);
void check_adamw_step_multi_tensor(const std::vector<Tensor>& params,
                                   const std::vector<Tensor>& grads,
                                   const std::vector<Tensor>& exp_avgs,
                                   const std::vector<Tensor>& exp_avg_sqs, int64_t step);

namespace cpu {
void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWOptions& options, int64_t step);
void adamw_step_multi_tensor(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             std::vector<Tensor>& exp_avgs, std::vector<Tensor>& exp_avg_sqs,
                             const AdamWOptions& options, int64_t step);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWOptions& options, int64_t step);
void adamw_step_multi_tensor(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             std::vector<Tensor>& exp_avgs, std::vector<Tensor>& exp_avg_sqs,
                             const AdamWOptions& options, int64_t step);
}  // namespace cuda
#endif

inline void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                       const AdamWOptions& options, int64_t step) {
  TITAN_DISPATCH_CPU_CUDA(param, adamw_step, param, grad, exp_avg, exp_avg_sq, options, step);
}

// params[i] with grads[i], exp_avgs[i], exp_avg_sqs[i]; all lists the same length, every
// tensor on the first parameter's device. An empty list does nothing.
inline void adamw_step_multi_tensor(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                                    std::vector<Tensor>& exp_avgs, std::vector<Tensor>& exp_avg_sqs,
                                    const AdamWOptions& options, int64_t step) {
  if (params.empty() && grads.empty() && exp_avgs.empty() && exp_avg_sqs.empty()) return;
  TITAN_CHECK(!params.empty()) << "adamw_step_multi_tensor: no parameters but "
                               << grads.size() << " gradients";
  TITAN_DISPATCH_CPU_CUDA(params.front(), adamw_step_multi_tensor, params, grads, exp_avgs,
                          exp_avg_sqs, options, step);
}

}  // namespace titan::ops

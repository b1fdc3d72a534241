// AdamW on the CPU: one pass over the elements, OpenMP over contiguous ranges. Every
// element is independent, so the result does not depend on the thread count.
#include <cmath>

#include "titan/ops/adamw.h"

namespace titan::ops::cpu {

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWOptions& options, int64_t step) {
  const char* op = "adamw_step";
  check_dtype(param, DType::F32, op, "param");
  check_dtype(grad, DType::F32, op, "grad");
  check_dtype(exp_avg, DType::F32, op, "exp_avg");
  check_dtype(exp_avg_sq, DType::F32, op, "exp_avg_sq");
  check_shape(grad, param.shape(), op, "grad");
  check_shape(exp_avg, param.shape(), op, "exp_avg");
  check_shape(exp_avg_sq, param.shape(), op, "exp_avg_sq");
  TITAN_CHECK(step >= 1) << op << ": step counts from 1 (incremented before the update), got "
                         << step;
  // The scalars torch computes in Python (double) and hands to its kernels as float.
  const double t = double(step);
  const float decay = float(1.0 - options.lr * options.weight_decay);
  const float one_minus_beta1 = float(1.0 - options.beta1);
  const bool lerp_small_weight = std::fabs(one_minus_beta1) < 0.5f;
  const float beta1_from_weight = 1.0f - one_minus_beta1;  // torch's opmath_t(1) - weight
  const float beta2 = float(options.beta2);
  const float one_minus_beta2 = float(1.0 - options.beta2);
  const double bias_correction1 = 1.0 - std::pow(options.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(options.beta2, t);
  const float neg_step_size = float(-(options.lr / bias_correction1));
  const float bias_correction2_sqrt = float(std::sqrt(bias_correction2));
  const float eps = float(options.eps);

  const int64_t n = param.numel();
  float* p = param.mutable_data<float>();
  const float* g = grad.data<float>();
  float* m = exp_avg.mutable_data<float>();
  float* v = exp_avg_sq.mutable_data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float pi = p[i] * decay;
    // torch's lerp(self, end, weight) picks its form by |weight| < 0.5.
    const float mi = lerp_small_weight ? m[i] + one_minus_beta1 * (gi - m[i])
                                       : gi - (gi - m[i]) * beta1_from_weight;
    const float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    const float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
    p[i] = pi + neg_step_size * mi / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace titan::ops::cpu

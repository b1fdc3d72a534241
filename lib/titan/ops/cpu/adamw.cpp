// AdamW on the CPU: one pass over the elements, OpenMP over contiguous ranges. Every
// element is independent, so the result does not depend on the thread count.
#include <cmath>

#include "titan/core/threads.h"
#include "titan/ops/adamw.h"

namespace titan::ops::cpu {
namespace {

// The step of n elements. torch's lerp(self, end, weight) picks its form by |weight| < 0.5;
// the form is a template argument so that the loop has no branch and vectorizes.
template <bool kLerpSmallWeight>
void step_elements(int64_t n, float* __restrict p, const float* __restrict g,
                   float* __restrict m, float* __restrict v, const AdamWScalars& s) {
  const float decay = s.decay;
  const float one_minus_beta1 = s.one_minus_beta1;
  const float beta1_from_weight = s.beta1_from_weight;
  const float beta2 = s.beta2;
  const float one_minus_beta2 = s.one_minus_beta2;
  const float neg_step_size = s.neg_step_size;
  const float bias_correction2_sqrt = s.bias_correction2_sqrt;
  const float eps = s.eps;
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float pi = p[i] * decay;
    const float mi = kLerpSmallWeight ? m[i] + one_minus_beta1 * (gi - m[i])
                                      : gi - (gi - m[i]) * beta1_from_weight;
    const float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    const float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
    p[i] = pi + neg_step_size * mi / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

// One checked tensor's step with the step's scalars.
void step_tensor(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                 const AdamWScalars& s) {
  const int64_t n = param.numel();
  float* p = param.mutable_data<float>();
  const float* g = grad.data<float>();
  float* m = exp_avg.mutable_data<float>();
  float* v = exp_avg_sq.mutable_data<float>();
  if (s.lerp_small_weight) {
    step_elements<true>(n, p, g, m, v, s);
  } else {
    step_elements<false>(n, p, g, m, v, s);
  }
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWOptions& options, int64_t step) {
  check_adamw_step(param, grad, exp_avg, exp_avg_sq, step);
  step_tensor(param, grad, exp_avg, exp_avg_sq, adamw_scalars(options, step));
}

// Every tensor is checked before the first is stepped.
void adamw_step_multi_tensor(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             std::vector<Tensor>& exp_avgs, std::vector<Tensor>& exp_avg_sqs,
                             const AdamWOptions& options, int64_t step) {
  check_adamw_step_multi_tensor(params, grads, exp_avgs, exp_avg_sqs, step);
  const AdamWScalars scalars = adamw_scalars(options, step);
  for (size_t i = 0; i < params.size(); ++i) {
    step_tensor(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], scalars);
  }
}

}  // namespace titan::ops::cpu

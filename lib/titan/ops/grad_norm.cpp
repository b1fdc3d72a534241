// Device-independent parts of ops/grad_norm.h: the check both backends make, and clipping,
// which is ops::scale on any device.
#include "titan/ops/grad_norm.h"

namespace titan::ops {

void check_sum_of_squares(const Tensor& x) { check_dtype(x, DType::F32, "sum_of_squares", "x"); }

void clip_grads_with_norm(std::span<Tensor> grads, double max_norm, double total_norm) {
  const double coefficient = grad_clip_coefficient(max_norm, total_norm);
  // 1.0 changes no bits; skipping the pass saves a sweep over every gradient.
  if (coefficient == 1.0) return;
  for (Tensor& g : grads) {
    // f32 gradients only, as sum_of_squares takes them, though the GPU's scale takes bf16.
    check_dtype(g, DType::F32, "clip_grads_with_norm", "grad");
    scale(g, float(coefficient));
  }
}

}  // namespace titan::ops

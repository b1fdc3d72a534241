// The global gradient norm and clipping, torch's clip_grad_norm_ split in its two halves
// (get_total_norm, clip_grads_with_norm_), as torchtitan calls them:
//
//   sum_of_squares(g)      = sum_i g_i^2                  (one tensor, double)
//   grad_norm_total(gs)    = sqrt(sum over tensors of sum_of_squares)    (L2)
//   grad_clip_coefficient  = min(1, max_norm / (total_norm + 1e-6))      (NaN stays NaN)
//   clip_grads_with_norm   g *= grad_clip_coefficient, every tensor
//
// Distributed callers all-reduce the partial sums of squares (PP stages, sharded grads)
// before the square root, so sum_of_squares is public and returns double. Sums are in
// double over fixed blocks combined in a fixed order: the same bits on any thread count.
// A non-finite gradient gives a non-finite norm (NaN in, NaN out; inf in, inf out), and
// clipping with a NaN norm makes every gradient NaN, as torch does: the trainer checks
// the norm before stepping. A norm at or under max_norm leaves gradients untouched (torch
// multiplies by 1.0, which changes no bits either). torch makes the coefficient in float
// from a float norm; here it is made in double and cast to float for the multiply.
//
// Shapes: any; f32 gradients. Nothing kept; no backward (clipping sits outside autograd).
#pragma once

#include <algorithm>
#include <cmath>
#include <span>

#include "titan/ops/dispatch.h"

namespace titan::ops {

// torch's clip_grads_with_norm_ adds this to the norm so a zero norm divides safely.
inline constexpr double kGradClipEpsilon = 1e-6;

namespace cpu {
double sum_of_squares(const Tensor& x);
void clip_grads_with_norm(std::span<Tensor> grads, double max_norm, double total_norm);
}  // namespace cpu

inline double sum_of_squares(const Tensor& x) { TITAN_DISPATCH_CPU(x, sum_of_squares, x); }

// sqrt of the sum, tensor by tensor in order; 0 for no tensors.
inline double grad_norm_total(std::span<const Tensor> grads) {
  double sum = 0;
  for (const Tensor& g : grads) sum += sum_of_squares(g);
  return std::sqrt(sum);
}

// The factor clipping multiplies by: min(1, max_norm / (total_norm + 1e-6)), NaN for a NaN
// norm (std::min would hide it), 0 for an infinite one.
inline double grad_clip_coefficient(double max_norm, double total_norm) {
  const double coefficient = max_norm / (total_norm + kGradClipEpsilon);
  return std::isnan(coefficient) ? coefficient : std::min(1.0, coefficient);
}

inline void clip_grads_with_norm(std::span<Tensor> grads, double max_norm, double total_norm) {
  if (grads.empty()) return;
  TITAN_DISPATCH_CPU(grads.front(), clip_grads_with_norm, grads, max_norm, total_norm);
}

}  // namespace titan::ops

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
//
// CUDA: sum_of_squares is a two-stage reduction in double over a fixed grid (its size a
// function of the element count only), block sums added in a fixed tree, then one block
// adds the block sums: the same bits on every run and every GPU, within a few units in
// the last place of the CPU's double (another order of the same exact squares; bitwise
// equality would need the CPU's sequential chains, thousands of times slower). It
// returns to the host, so it waits for the queued work. Clipping multiplies through
// ops::scale, which the CUDA backend has, so its result is the CPU's bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>
#if __cplusplus >= 202002L
#include <span>
#endif

#include "titan/ops/dispatch.h"
#include "titan/ops/elementwise.h"

namespace titan::ops {

// torch's clip_grads_with_norm_ adds this to the norm so a zero norm divides safely.
inline constexpr double kGradClipEpsilon = 1e-6;

// The check both backends make on each tensor first (ops/grad_norm.cpp): f32 gradients.
void check_sum_of_squares(const Tensor& x);

namespace cpu {
double sum_of_squares(const Tensor& x);
std::vector<double> sums_of_squares(const std::vector<Tensor>& xs);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
double sum_of_squares(const Tensor& x);
std::vector<double> sums_of_squares(const std::vector<Tensor>& xs);
}  // namespace cuda
#endif

inline double sum_of_squares(const Tensor& x) {
  TITAN_DISPATCH_CPU_CUDA(x, sum_of_squares, x);
  return 0;  // not reached (the dispatch returns or throws); nvcc cannot tell
}

// sum_of_squares of each tensor, the same bits as one call per tensor; on a GPU one wait
// for all of them instead of one per tensor (the grad norm of a model's ~300 tensors).
// The tensors share one device; an empty list gives an empty result.
inline std::vector<double> sums_of_squares(const std::vector<Tensor>& xs) {
  if (xs.empty()) return {};
  TITAN_DISPATCH_CPU_CUDA(xs.front(), sums_of_squares, xs);
  return {};  // not reached (the dispatch returns or throws); nvcc cannot tell
}

// The CUDA sources build as C++17 (cmake/dependencies.cmake) and have no std::span; they
// need only sum_of_squares above.
#if __cplusplus >= 202002L
// sqrt of the sum, tensor by tensor in order; 0 for no tensors.
inline double grad_norm_total(std::span<const Tensor> grads) {
  double sum = 0;
  for (double s : sums_of_squares(std::vector<Tensor>(grads.begin(), grads.end()))) sum += s;
  return std::sqrt(sum);
}

// The factor clipping multiplies by: min(1, max_norm / (total_norm + 1e-6)), NaN for a NaN
// norm (std::min would hide it), 0 for an infinite one.
inline double grad_clip_coefficient(double max_norm, double total_norm) {
  const double coefficient = max_norm / (total_norm + kGradClipEpsilon);
  return std::isnan(coefficient) ? coefficient : std::min(1.0, coefficient);
}

// Scales tensor by tensor through ops::scale, which dispatches on each tensor's device
// (ops/grad_norm.cpp).
void clip_grads_with_norm(std::span<Tensor> grads, double max_norm, double total_norm);
#endif  // std::span

}  // namespace titan::ops

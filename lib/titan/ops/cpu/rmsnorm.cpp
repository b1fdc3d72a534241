// RMSNorm on the CPU: one row per loop iteration, sums in double so that the reference
// backend does not lose bits on wide rows. Threads split rows (forward, dx) or column
// blocks (dweight), so results do not depend on the thread count. bf16 tensors run on f32
// copies (ops/cpu/bf16_storage.h).
#include <cmath>

#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/rmsnorm.h"

namespace titan::ops::cpu {

void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd) {
  check_rmsnorm_forward(x, weight, y, rstd, kFloatDTypes);
  if (any_bf16({&x, &weight, &y})) {
    F32Output y32(y, false);
    cpu::rmsnorm_forward(*F32Input(x), *F32Input(weight), eps, *y32, rstd);
    return y32.store();
  }
  const int64_t N = x.size(0), D = x.size(1);
  const float* xp = x.data<float>();
  const float* wp = weight.data<float>();
  float* yp = y.mutable_data<float>();
  float* rp = rstd.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(N * D))
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = xp + n * D;
    double sum_sq = 0;
    for (int64_t i = 0; i < D; ++i) sum_sq += double(xr[i]) * xr[i];
    const float r = float(1.0 / std::sqrt(sum_sq / double(D) + double(eps)));
    float* yr = yp + n * D;
    for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * r * wp[i];
    rp[n] = r;
  }
}

void rmsnorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight,
                            const Tensor& rstd, Tensor& dx, Accumulate accumulate) {
  check_rmsnorm_backward_input(dy, x, weight, rstd, dx, kFloatDTypes);
  if (any_bf16({&dy, &x, &weight, &dx})) {
    F32Output dx32(dx, accumulate == Accumulate::Yes);
    cpu::rmsnorm_backward_input(*F32Input(dy), *F32Input(x), *F32Input(weight), rstd, *dx32,
                                accumulate);
    return dx32.store();
  }
  const int64_t N = x.size(0), D = x.size(1);
  const float* xp = x.data<float>();
  const float* wp = weight.data<float>();
  const float* gp = dy.data<float>();
  const float* rp = rstd.data<float>();
  float* dxp = dx.mutable_data<float>();
  const bool add = accumulate == Accumulate::Yes;
#pragma omp parallel for schedule(static) if (worth_threads(N * D))
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = xp + n * D;
    const float* gr = gp + n * D;
    double dot = 0;  // sum(weight * dy * x)
    for (int64_t i = 0; i < D; ++i) dot += double(wp[i]) * gr[i] * xr[i];
    const float r = rp[n];
    const float c = float(dot / double(D)) * r * r * r;
    float* dr = dxp + n * D;
    for (int64_t i = 0; i < D; ++i) {
      const float g = r * wp[i] * gr[i] - c * xr[i];
      dr[i] = add ? dr[i] + g : g;
    }
  }
}

void rmsnorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd,
                             Tensor& dweight) {
  check_rmsnorm_backward_weight(dy, x, rstd, dweight, kFloatDTypes);
  if (any_bf16({&dy, &x, &dweight})) {
    F32Output dweight32(dweight, true);
    cpu::rmsnorm_backward_weight(*F32Input(dy), *F32Input(x), rstd, *dweight32);
    return dweight32.store();
  }
  const int64_t N = x.size(0), D = x.size(1);
  constexpr int64_t kBlock = 64;  // columns per task: one cache line of each row, 4 times
  const float* xp = x.data<float>();
  const float* gp = dy.data<float>();
  const float* rp = rstd.data<float>();
  float* dwp = dweight.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(N * D))
  for (int64_t i0 = 0; i0 < D; i0 += kBlock) {
    const int64_t i1 = std::min(D, i0 + kBlock);
    double acc[kBlock] = {};
    for (int64_t n = 0; n < N; ++n) {
      const float r = rp[n];
      for (int64_t i = i0; i < i1; ++i) acc[i - i0] += double(gp[n * D + i]) * xp[n * D + i] * r;
    }
    for (int64_t i = i0; i < i1; ++i) dwp[i] += float(acc[i - i0]);
  }
}

}  // namespace titan::ops::cpu

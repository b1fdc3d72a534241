// RMSNorm on the CPU: one row per loop iteration, sums in double so that the reference
// backend does not lose bits on wide rows. Threads split rows (forward, dx) or column
// blocks (dweight), so results do not depend on the thread count. The kernels are
// templated on the activations' storage T (f32 or bf16: ops/cpu/bf16_storage.h; weight, y,
// dy and dx share x's) and dweight's G (f32, or x's bf16).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/rmsnorm.h"

namespace titan::ops::cpu {
namespace {

template <class T>
void forward_rows(const T* xp, const T* wp, float eps, T* yp, float* rp, int64_t N, int64_t D) {
#pragma omp parallel for schedule(static) if (worth_threads(N * D))
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = xp + n * D;
    double sum_sq = 0;
    for (int64_t i = 0; i < D; ++i) sum_sq += double(load(xr, i)) * load(xr, i);
    const float r = float(1.0 / std::sqrt(sum_sq / double(D) + double(eps)));
    T* yr = yp + n * D;
    for (int64_t i = 0; i < D; ++i) store(yr, i, load(xr, i) * r * load(wp, i));
    rp[n] = r;
  }
}

template <class T>
void backward_input_rows(const T* gp, const T* xp, const T* wp, const float* rp, T* dxp,
                         bool add, int64_t N, int64_t D) {
#pragma omp parallel for schedule(static) if (worth_threads(N * D))
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = xp + n * D;
    const T* gr = gp + n * D;
    double dot = 0;  // sum(weight * dy * x)
    for (int64_t i = 0; i < D; ++i) dot += double(load(wp, i)) * load(gr, i) * load(xr, i);
    const float r = rp[n];
    const float c = float(dot / double(D)) * r * r * r;
    T* dr = dxp + n * D;
    for (int64_t i = 0; i < D; ++i) {
      const float g = r * load(wp, i) * load(gr, i) - c * load(xr, i);
      store(dr, i, add ? load(dr, i) + g : g);
    }
  }
}

template <class T, class G>
void backward_weight_columns(const T* gp, const T* xp, const float* rp, G* dwp, int64_t N,
                             int64_t D) {
  constexpr int64_t kBlock = 64;  // columns per task: one cache line of each row, 4 times
#pragma omp parallel for schedule(static) if (worth_threads(N * D))
  for (int64_t i0 = 0; i0 < D; i0 += kBlock) {
    const int64_t i1 = std::min(D, i0 + kBlock);
    double acc[kBlock] = {};
    for (int64_t n = 0; n < N; ++n) {
      const float r = rp[n];
      for (int64_t i = i0; i < i1; ++i) {
        acc[i - i0] += double(load(gp, n * D + i)) * load(xp, n * D + i) * r;
      }
    }
    for (int64_t i = i0; i < i1; ++i) store(dwp, i, load(dwp, i) + float(acc[i - i0]));
  }
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd) {
  check_rmsnorm_forward(x, weight, y, rstd, kFloatDTypes);
  visit_storage(y, [&](auto* yp) {
    using T = std::remove_pointer_t<decltype(yp)>;
    forward_rows(x.data<T>(), weight.data<T>(), eps, yp, rstd.mutable_data<float>(), x.size(0),
                 x.size(1));
  });
}

void rmsnorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight,
                            const Tensor& rstd, Tensor& dx, Accumulate accumulate) {
  check_rmsnorm_backward_input(dy, x, weight, rstd, dx, kFloatDTypes);
  visit_storage(dx, [&](auto* dxp) {
    using T = std::remove_pointer_t<decltype(dxp)>;
    backward_input_rows(dy.data<T>(), x.data<T>(), weight.data<T>(), rstd.data<float>(), dxp,
                        accumulate == Accumulate::Yes, x.size(0), x.size(1));
  });
}

void rmsnorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd,
                             Tensor& dweight) {
  check_rmsnorm_backward_weight(dy, x, rstd, dweight, kFloatDTypes);
  visit_storage(x, [&](const auto* xp) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(xp)>>;
    visit_storage(dweight, [&](auto* dwp) {
      backward_weight_columns(dy.data<T>(), xp, rstd.data<float>(), dwp, x.size(0), x.size(1));
    });
  });
}

}  // namespace titan::ops::cpu

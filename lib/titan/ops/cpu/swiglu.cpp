// SwiGLU on the CPU: one OpenMP loop over the elements, the formulas of ops/swiglu.h in f32,
// vectorized (ops/cpu/vector_math.h's sigmoid), templated on the storage the five tensors
// share (f32 or bf16: ops/cpu/bf16_storage.h).
#include <type_traits>

#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/cpu/vector_math.h"
#include "titan/ops/swiglu.h"

namespace titan::ops::cpu {

void swiglu_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  check_swiglu_forward(a, b, y, kFloatDTypes);
  const int64_t n = a.numel();
  visit_storage(y, [&](auto* yp) {
    using T = std::remove_pointer_t<decltype(yp)>;
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) {
      const float x = load(ap, i);
      store(yp, i, x * sigmoid(x) * load(bp, i));
    }
  });
}

void swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, Tensor& da, Tensor& db) {
  check_swiglu_backward(dy, a, b, da, db, kFloatDTypes);
  const int64_t n = a.numel();
  visit_storage(da, [&](auto* dap) {
    using T = std::remove_pointer_t<decltype(dap)>;
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    const T* gp = dy.data<T>();
    T* dbp = db.mutable_data<T>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) {
      const float x = load(ap, i);
      const float s = sigmoid(x);
      const float silu = x * s;
      const float g = load(gp, i);
      store(dap, i, g * load(bp, i) * s * (1.0f + x * (1.0f - s)));
      store(dbp, i, g * silu);
    }
  });
}

}  // namespace titan::ops::cpu

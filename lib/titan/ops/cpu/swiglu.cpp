// SwiGLU on the CPU: one OpenMP loop over the elements, the formulas of ops/swiglu.h in f32,
// vectorized (ops/cpu/vector_math.h's sigmoid). bf16 tensors run on f32 copies
// (ops/cpu/bf16_storage.h).
#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/cpu/vector_math.h"
#include "titan/ops/swiglu.h"

namespace titan::ops::cpu {

void swiglu_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  check_swiglu_forward(a, b, y, kFloatDTypes);
  if (any_bf16({&a, &b, &y})) {
    F32Output y32(y, false);
    cpu::swiglu_forward(*F32Input(a), *F32Input(b), *y32);
    return y32.store();
  }
  const int64_t n = a.numel();
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    yp[i] = ap[i] * sigmoid(ap[i]) * bp[i];
  }
}

void swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, Tensor& da, Tensor& db) {
  check_swiglu_backward(dy, a, b, da, db, kFloatDTypes);
  if (any_bf16({&dy, &a, &b, &da, &db})) {
    F32Output da32(da, false), db32(db, false);
    cpu::swiglu_backward(*F32Input(dy), *F32Input(a), *F32Input(b), *da32, *db32);
    da32.store();
    return db32.store();
  }
  const int64_t n = a.numel();
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  const float* gp = dy.data<float>();
  float* dap = da.mutable_data<float>();
  float* dbp = db.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    const float x = ap[i];
    const float s = sigmoid(x);
    const float silu = x * s;
    const float g = gp[i];
    dap[i] = g * bp[i] * s * (1.0f + x * (1.0f - s));
    dbp[i] = g * silu;
  }
}

}  // namespace titan::ops::cpu

// Elementwise arithmetic on the CPU: one OpenMP loop each over contiguous elements.
#include "titan/core/threads.h"
#include "titan/ops/elementwise.h"

namespace titan::ops::cpu {

void fill(Tensor& y, float value) {
  check_elementwise_output(y, kFloatDTypes, "fill");
  const int64_t n = y.numel();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) yp[i] = value;
}

void scale(Tensor& y, float factor) {
  check_elementwise_output(y, kFloatDTypes, "scale");
  const int64_t n = y.numel();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) yp[i] *= factor;
}

void add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "add");
  check_elementwise_input(a, y, kFloatDTypes, "add", "a");
  check_elementwise_input(b, y, kFloatDTypes, "add", "b");
  const int64_t n = y.numel();
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) yp[i] = ap[i] + bp[i];
}

void accumulate(const Tensor& x, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "accumulate");
  check_elementwise_input(x, y, kFloatDTypes, "accumulate", "x");
  const int64_t n = y.numel();
  const float* xp = x.data<float>();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) yp[i] += xp[i];
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "axpy");
  check_elementwise_input(x, y, kFloatDTypes, "axpy", "x");
  const int64_t n = y.numel();
  const float* xp = x.data<float>();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) yp[i] += alpha * xp[i];
}

}  // namespace titan::ops::cpu

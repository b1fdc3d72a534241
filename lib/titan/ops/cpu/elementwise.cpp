// Elementwise arithmetic on the CPU: one OpenMP loop each over contiguous elements, templated
// on each tensor's storage (f32 or bf16: ops/cpu/bf16_storage.h).
#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/elementwise.h"

namespace titan::ops::cpu {

void fill(Tensor& y, float value) {
  check_elementwise_output(y, kFloatDTypes, "fill");
  const int64_t n = y.numel();
  visit_storage(y, [&](auto* yp) {
#pragma omp parallel for schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) store(yp, i, value);
  });
}

void scale(Tensor& y, float factor) {
  check_elementwise_output(y, kFloatDTypes, "scale");
  const int64_t n = y.numel();
  visit_storage(y, [&](auto* yp) {
#pragma omp parallel for schedule(static) if (worth_threads(n))
    for (int64_t i = 0; i < n; ++i) store(yp, i, load(yp, i) * factor);
  });
}

void add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "add");
  check_elementwise_input(a, y, kFloatDTypes, "add", "a");
  check_elementwise_input(b, y, kFloatDTypes, "add", "b");
  const int64_t n = y.numel();
  visit_storage(a, [&](const auto* ap) {
    visit_storage(b, [&](const auto* bp) {
      visit_storage(y, [&](auto* yp) {
#pragma omp parallel for schedule(static) if (worth_threads(n))
        for (int64_t i = 0; i < n; ++i) store(yp, i, load(ap, i) + load(bp, i));
      });
    });
  });
}

void accumulate(const Tensor& x, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "accumulate");
  check_elementwise_input(x, y, kFloatDTypes, "accumulate", "x");
  const int64_t n = y.numel();
  visit_storage(x, [&](const auto* xp) {
    visit_storage(y, [&](auto* yp) {
#pragma omp parallel for schedule(static) if (worth_threads(n))
      for (int64_t i = 0; i < n; ++i) store(yp, i, load(yp, i) + load(xp, i));
    });
  });
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "axpy");
  check_elementwise_input(x, y, kFloatDTypes, "axpy", "x");
  const int64_t n = y.numel();
  visit_storage(x, [&](const auto* xp) {
    visit_storage(y, [&](auto* yp) {
#pragma omp parallel for schedule(static) if (worth_threads(n))
      for (int64_t i = 0; i < n; ++i) store(yp, i, load(yp, i) + alpha * load(xp, i));
    });
  });
}

}  // namespace titan::ops::cpu

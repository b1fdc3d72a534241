// Elementwise arithmetic on the CPU: one OpenMP loop each over contiguous elements.
#include "titan/ops/elementwise.h"

namespace titan::ops::cpu {
namespace {

// An input of a binary op: defined, on the CPU (the dispatch looked at the output only),
// and as many elements as the output. Shapes may differ (a flat view of a 2-D gradient
// is fine), counts may not.
void check_operand(const Tensor& t, const Tensor& y, const char* op, const char* arg) {
  TITAN_CHECK(t.defined()) << op << ": " << arg << " is undefined";
  TITAN_CHECK(t.device().is_cpu()) << op << ": " << arg << " is on " << t.device()
                                   << ", the other operands on the CPU";
  TITAN_CHECK(t.numel() == y.numel()) << op << ": " << arg << " has shape "
                                      << shape_string(t.shape()) << ", output "
                                      << shape_string(y.shape());
}

}  // namespace

void fill(Tensor& y, float value) {
  check_dtype(y, DType::F32, "fill", "y");
  const int64_t n = y.numel();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) yp[i] = value;
}

void scale(Tensor& y, float factor) {
  check_dtype(y, DType::F32, "scale", "y");
  const int64_t n = y.numel();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) yp[i] *= factor;
}

void add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_dtype(y, DType::F32, "add", "y");
  check_dtype(a, DType::F32, "add", "a");
  check_dtype(b, DType::F32, "add", "b");
  check_operand(a, y, "add", "a");
  check_operand(b, y, "add", "b");
  const int64_t n = y.numel();
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) yp[i] = ap[i] + bp[i];
}

void accumulate(const Tensor& x, Tensor& y) {
  check_dtype(y, DType::F32, "accumulate", "y");
  check_dtype(x, DType::F32, "accumulate", "x");
  check_operand(x, y, "accumulate", "x");
  const int64_t n = y.numel();
  const float* xp = x.data<float>();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) yp[i] += xp[i];
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  check_dtype(y, DType::F32, "axpy", "y");
  check_dtype(x, DType::F32, "axpy", "x");
  check_operand(x, y, "axpy", "x");
  const int64_t n = y.numel();
  const float* xp = x.data<float>();
  float* yp = y.mutable_data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) yp[i] += alpha * xp[i];
}

}  // namespace titan::ops::cpu

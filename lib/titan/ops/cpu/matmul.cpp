// GEMM on the CPU: OpenBLAS's cblas_sgemm, row-major. OpenBLAS runs its own threads (the
// count set by configure_threads), so this is never called from inside an OpenMP region.
#include <cblas.h>

#include "titan/ops/matmul.h"

namespace titan::ops::cpu {

void matmul(const Tensor& a, Transpose transpose_a, const Tensor& b, Transpose transpose_b,
            Tensor& c, float alpha, float beta) {
  const GemmShape s = check_matmul(a, transpose_a, b, transpose_b, c, kFloatDTypes);
  if (s.m == 0 || s.n == 0) return;
  if (s.k == 0) {  // an empty sum: C = beta * C
    float* cp = c.mutable_data<float>();
    for (int64_t i = 0; i < s.m * s.n; ++i) cp[i] = beta == 0.0f ? 0.0f : beta * cp[i];
    return;
  }
  cblas_sgemm(CblasRowMajor, transpose_a == Transpose::Yes ? CblasTrans : CblasNoTrans,
              transpose_b == Transpose::Yes ? CblasTrans : CblasNoTrans, int(s.m), int(s.n),
              int(s.k), alpha, a.data<float>(), int(a.size(1)), b.data<float>(), int(b.size(1)),
              beta, c.mutable_data<float>(), int(c.size(1)));
}

}  // namespace titan::ops::cpu

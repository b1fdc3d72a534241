// Device-independent parts of ops/matmul.h: the checks both backends make, and the linear
// layer (three matmuls on any device).
#include "titan/ops/matmul.h"

#include <algorithm>
#include <chrono>

#include "titan/core/threads.h"

namespace titan::ops {

GemmShape gemm_shape(const Tensor& a, Transpose transpose_a, const Tensor& b,
                     Transpose transpose_b, const Tensor& c) {
  TITAN_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2)
      << "matmul: operands must be 2-D, got A " << shape_string(a.shape()) << ", B "
      << shape_string(b.shape()) << ", C " << shape_string(c.shape());
  const bool ta = transpose_a == Transpose::Yes, tb = transpose_b == Transpose::Yes;
  const GemmShape s{ta ? a.size(1) : a.size(0), tb ? b.size(0) : b.size(1),
                    ta ? a.size(0) : a.size(1)};
  const int64_t kb = tb ? b.size(1) : b.size(0);
  TITAN_CHECK(kb == s.k && c.size(0) == s.m && c.size(1) == s.n)
      << "matmul: shapes do not fit: op(A) " << s.m << "x" << s.k << ", op(B) " << kb << "x" << s.n
      << ", C " << shape_string(c.shape());
  return s;
}

GemmShape check_matmul(const Tensor& a, Transpose transpose_a, const Tensor& b,
                       Transpose transpose_b, const Tensor& c, FloatDTypes accepted) {
  TITAN_CHECK(a.defined() && b.defined() && c.defined()) << "matmul: undefined operand";
  check_float_dtype(a, accepted, "matmul", "A");
  TITAN_CHECK(b.dtype() == a.dtype())
      << "matmul: A is " << dtype_name(a.dtype()) << " but B is " << dtype_name(b.dtype())
      << "; A and B must have the same dtype";
  TITAN_CHECK(c.dtype() == DType::F32 || (c.dtype() == DType::BF16 && a.dtype() == DType::BF16))
      << "matmul: C is " << dtype_name(c.dtype()) << " for " << dtype_name(a.dtype())
      << " inputs; supported: f32 x f32 -> f32"
      << (accepted == FloatDTypes::F32OrBF16 ? ", bf16 x bf16 -> f32 or bf16" : "");
  return gemm_shape(a, transpose_a, b, transpose_b, c);
}

void linear_forward(const Tensor& x, const Tensor& weight, Tensor& y) {
  Tensor y2 = y.flatten_to_2d();
  matmul(x.flatten_to_2d(), Transpose::No, weight, Transpose::Yes, y2);
}

void linear_backward_input(const Tensor& dy, const Tensor& weight, Tensor& dx,
                           Accumulate accumulate) {
  Tensor dx2 = dx.flatten_to_2d();
  matmul(dy.flatten_to_2d(), Transpose::No, weight, Transpose::No, dx2, 1.0f,
         accumulate == Accumulate::Yes ? 1.0f : 0.0f);
}

void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dweight) {
  matmul(dy.flatten_to_2d(), Transpose::Yes, x.flatten_to_2d(), Transpose::No, dweight, 1.0f, 1.0f);
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, Tensor& dx,
                     Tensor& dweight, Accumulate accumulate_dx) {
  linear_backward_input(dy, weight, dx, accumulate_dx);
  linear_backward_weight(dy, x, dweight);
}

double measure_sgemm_gflops(int n) {
  Tensor a = Tensor::empty({n, n}, DType::F32), b = Tensor::empty({n, n}, DType::F32);
  Tensor c = Tensor::empty({n, n}, DType::F32);
  std::fill_n(a.mutable_data<float>(), a.numel(), 0.5f);
  std::fill_n(b.mutable_data<float>(), b.numel(), 0.25f);
  double best_s = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    cpu::matmul(a, Transpose::No, b, Transpose::No, c, 1.0f, 0.0f);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) best_s = std::min(best_s, s);  // the first run warms caches and threads
  }
  return 2.0 * double(n) * n * n / best_s / 1e9;
}

std::string cpu_gemm_warning() {
  return cpu::gemm_library() == cpu::GemmLibrary::OpenBlas ? blas_core_warning() : "";
}

}  // namespace titan::ops

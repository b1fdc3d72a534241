// The Float8 GEMM: the product a Float8 linear layer runs on fp8 tensor cores (cuBLASLt),
// with operands cast by ops/float8.h. GPU only; the CPU emulates it exactly as ops/float8.h
// says (float8_round_trip on both operands, then the f32 matmul).
//
//   float8_gemm(a_q, a_scale, b_q, b_scale, c, accumulate)
//     c[m, n] (= or +=)  sum_k a_q[m, k] * b_q[n, k]  /  (a_scale * b_scale)
//
//   a_q      [M, K] row-major fp8 (more dims are viewed as [rows, K]; c then has a_q's
//            leading dims and N last)
//   b_q      [N, K] row-major fp8. Both operands are "K-major", the only layout cuBLASLt's
//            fp8 kernels take (its "TN"). Formats: e4m3 x e4m3, e4m3 x e5m2, e5m2 x e4m3
//            (cuBLASLt has no e5m2 x e5m2).
//   a_scale  f32, the scales float8_quantize used: [1] (tensorwise) or [M] (rowwise,
//   b_scale  Float8Axis::Rows of a_q) and [1] or [N]. A vector beside a [1] is fine: the
//            [1] is broadcast (cuBLASLt's outer-vector mode scales both operands or none).
//   c        f32 or bf16; the sum in f32 (CUBLAS_COMPUTE_32F with cuBLASLt's fast fp8
//            accumulation off: Hopper's fp8 MMA keeps partial sums in reduced precision,
//            which cuBLASLt otherwise promotes to f32 at intervals), then 1/(sa sb), then
//            rounded once to c's dtype. Accumulate::Yes adds to c (beta = 1).
//   Limits: K and N multiples of 16, a_q, b_q and c 16-byte aligned (cuBLASLt's fp8 kernels
//   read 16-byte rows); a GPU of compute capability 8.9 or more (float8_gemm_supported).
//   Rowwise scales use cuBLASLt's CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F (CUDA 13 has it;
//   whether cuBLASLt runs it below compute capability 9.0 is not checked here: where it
//   does not, float8_gemm fails saying that it found no algorithm).
//
// The scales enter as their reciprocals (cuBLASLt multiplies by its scale pointers), made
// on the device by a small kernel in f32: power-of-two scales give exact reciprocals. So
// the GPU computes (sum_k qa qb) * (1/sa) * (1/sb) where the emulation sums
// (qa/sa)(qb/sb): the same value up to f32 rounding and summation order.
//
// The linear layer y = x W^T (x [T, in], W [out, in]) needs each operand K-major in the
// product it enters, which in the backward means transposed copies:
//   forward          y  = x W^T     a = x    [T, in]    b = W    [out, in]  K = in   no copies
//   backward_input   dx = dy W      a = dy   [T, out]   b = W^T  [in, out]  K = out  W^T
//   backward_weight  dW = dy^T x    a = dy^T [out, T]   b = x^T  [in, T]    K = T    dy^T, x^T
// float8_quantize_transposed writes q^T in one pass. Rowwise recipes scale each operand
// along its own M or N dim, so the transposed copies take Float8Axis::Columns scales of the
// untransposed tensor (W's per-in-column amax for dx; dy's per-out and x's per-in column
// amax for dW), as torchao's rowwise recipe does.
//
//   float8_quantize_transposed(x, scale, axis, q_t)
//     x viewed as [rows, cols] (f32 or bf16), q_t [cols, rows] fp8 of q_t's dtype:
//     q_t[j, i] = fp8(x[i, j] * s(i, j)), bit for bit float8_quantize's q, transposed; the
//     scale `axis` (and its size) refers to x, as in float8_quantize.
#pragma once

#include "titan/build_config.h"
#include "titan/core/trace.h"
#include "titan/ops/dispatch.h"
#include "titan/ops/float8.h"

namespace titan::ops {

#if TITAN_HAVE_CUDA
namespace cuda {
void float8_gemm(const Tensor& a_q, const Tensor& a_scale, const Tensor& b_q,
                 const Tensor& b_scale, Tensor& c, Accumulate accumulate);
// Whether CUDA device `device_index` has fp8 tensor cores (compute capability >= 8.9).
// False, never an error, where the device cannot be queried (no GPU, no driver).
bool float8_gemm_supported(int device_index);
void float8_quantize_transposed(const Tensor& x, const Tensor& scale, Float8Axis axis,
                                Tensor& q_transposed);
}  // namespace cuda
#endif

inline bool float8_gemm_supported(Device device) {
#if TITAN_HAVE_CUDA
  return device.is_cuda() && cuda::float8_gemm_supported(device.index);
#else
  (void)device;
  return false;
#endif
}

inline void float8_gemm(const Tensor& a_q, const Tensor& a_scale, const Tensor& b_q,
                        const Tensor& b_scale, Tensor& c, Accumulate accumulate) {
  const TraceSpan span("float8_gemm");
#if TITAN_HAVE_CUDA
  if (a_q.device().is_cuda()) return cuda::float8_gemm(a_q, a_scale, b_q, b_scale, c, accumulate);
#endif
  TITAN_FAIL() << "float8_gemm has no kernel for " << a_q.device()
               << " (the CPU emulates it: float8_round_trip on both operands, then matmul)";
}

inline void float8_quantize_transposed(const Tensor& x, const Tensor& scale, Float8Axis axis,
                                       Tensor& q_transposed) {
  const TraceSpan span("float8_quantize_transposed");
#if TITAN_HAVE_CUDA
  if (x.device().is_cuda()) return cuda::float8_quantize_transposed(x, scale, axis, q_transposed);
#endif
  TITAN_FAIL() << "float8_quantize_transposed has no kernel for " << x.device();
}

}  // namespace titan::ops

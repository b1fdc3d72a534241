// Matrix products and the linear layer built on them.
//
//   matmul:  C[M, N] = alpha * op(A) * op(B) + beta * C,  op(X) = X or X^T
//            (beta = 1 accumulates into C; beta = 0 overwrites, C's old contents unread)
//   linear:  y[N, out] = x[N, in] * W[out, in]^T           (no bias in Llama)
//     backward_input:   dx[N, in]   = dy * W     (= or += per Accumulate)
//     backward_weight:  dW[out, in] += dy^T * x  (always +=, so microbatches accumulate)
// Tensors with more than two dims are viewed as [rows, last dim]. A and B f32, or both
// bf16 with f32 accumulation, on the CPU (oneDNN's matmul, or OpenBLAS's sgemm in builds
// without oneDNN: ops/cpu/matmul.cpp says when bf16 runs as bf16) and the GPU (cuBLASLt).
#pragma once

#include <string>

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

enum class Transpose { No, Yes };

namespace cpu {
void matmul(const Tensor& a, Transpose transpose_a, const Tensor& b, Transpose transpose_b,
            Tensor& c, float alpha, float beta);
// The library the CPU GEMMs run on. oneDNN (builds with TITAN_HAVE_DNNL) where the CPU has
// AVX-512, where it is the faster and OpenBLAS may not know the core; OpenBLAS elsewhere
// (on AVX2 it was as fast or faster: docs/performance.md). TITAN_CPU_GEMM=onednn|openblas
// overrides (InputError for another value, or onednn without it). Chosen once per process,
// so a run's bits do not depend on timing.
enum class GemmLibrary { OpenBlas, OneDnn };
GemmLibrary gemm_library();
// Tests and benchmarks: run the GEMMs on `library` from now on (InputError without it).
void set_gemm_library(GemmLibrary library);
// "oneDNN 2.6.3", "OpenBLAS 0.3.21": as the logs name it.
const char* gemm_library_name(GemmLibrary library = gemm_library());

// How the CPU multiplies bf16 A and B (mixed precision). Native: oneDNN's bf16 GEMMs (f32
// accumulation). Widened: both operands widen to f32 (exactly) for the f32 GEMM and a bf16
// C is rounded once. The same products and f32 sums either way; the rate differs by CPU.
// Native where oneDNN runs AMX on this CPU (tile multiplies, several times its f32 FMA
// rate; oneDNN's own effective ISA decides, so a kernel or library that withholds the tiles
// gets widened GEMMs); widened
// elsewhere: on the AVX512_BF16 Xeon measured (docs/performance.md) its bf16 dot products
// ran at half the f32 FMA rate, and the native GEMMs at 0.55 of sgemm. TITAN_CPU_BF16_GEMM
// =native|widened overrides (native needs oneDNN and AVX512_BF16 or AMX; InputError).
// Chosen once per process.
enum class Bf16Gemm { Native, Widened };
Bf16Gemm bf16_gemm();
bool bf16_gemm_available(Bf16Gemm mode);
// Tests and benchmarks: from now on (InputError where unavailable).
void set_bf16_gemm(Bf16Gemm mode);
const char* bf16_gemm_name(Bf16Gemm mode = bf16_gemm());  // "native (oneDNN, AMX)", ...
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void matmul(const Tensor& a, Transpose transpose_a, const Tensor& b, Transpose transpose_b,
            Tensor& c, float alpha, float beta);
}  // namespace cuda
#endif

inline void matmul(const Tensor& a, Transpose transpose_a, const Tensor& b, Transpose transpose_b,
                   Tensor& c, float alpha = 1.0f, float beta = 0.0f) {
  TITAN_DISPATCH_CPU_CUDA(a, matmul, a, transpose_a, b, transpose_b, c, alpha, beta);
}

// GEMM shape bookkeeping shared by every backend: M, N, K of op(A) * op(B), checked
// against C. Throws naming the op and the shapes when they do not fit.
struct GemmShape {
  int64_t m, n, k;
};
GemmShape gemm_shape(const Tensor& a, Transpose transpose_a, const Tensor& b,
                     Transpose transpose_b, const Tensor& c);

// The checks both backends make first (ops/matmul.cpp): A and B of one of the backend's
// float dtypes, C f32 (or bf16 when A and B are), then gemm_shape's.
GemmShape check_matmul(const Tensor& a, Transpose transpose_a, const Tensor& b,
                       Transpose transpose_b, const Tensor& c, FloatDTypes accepted);

// The linear layer is the same three products on every device.
void linear_forward(const Tensor& x, const Tensor& weight, Tensor& y);
void linear_backward_input(const Tensor& dy, const Tensor& weight, Tensor& dx,
                           Accumulate accumulate);
void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dweight);
// Both halves; a zero-bubble pipeline calls them apart.
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, Tensor& dx,
                     Tensor& dweight, Accumulate accumulate_dx);

// The CPU GEMMs' f32 rate with the current thread count (n x n x n, best of three after a
// warm-up), GFLOP/s: the CPU's peak for MFU and the peer beside every CPU benchmark figure.
double measure_sgemm_gflops(int n = 1024);
// A one-line warning with the fix when the CPU GEMMs run below the CPU's speed (OpenBLAS's
// generic kernels on an AVX-512 CPU, where the GEMMs are OpenBLAS's); empty when all is well.
std::string cpu_gemm_warning();

}  // namespace titan::ops

// GEMM on the GPU through cuBLASLt (contract in ops/matmul.h):
//
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C      (row-major, like the CPU)
//
// cuBLASLt is column-major. A row-major matrix X[r, c] is, byte for byte, the column-major
// matrix X^T[c, r] with leading dimension c, so the row-major product C = op(A) op(B) is
// computed as the column-major product C^T = op(B)^T op(A)^T: B's bytes go in cuBLASLt's
// "A" slot with B's transpose flag, A's bytes in the "B" slot with A's flag, and m, n swap.
//
// Types (CUBLAS_COMPUTE_32F: f32 accumulation and f32 alpha/beta, never TF32):
//   A, B f32  -> C f32
//   A, B bf16 -> C f32 or bf16
// cuBLASLt has no f32-inputs/bf16-output kernel; that combination is rejected by name.
//
// The handle, workspace and descriptors are ops/cuda/cublaslt.h's, shared with the Float8
// GEMM; the one definition of cublaslt_device is here.
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <cuda_bf16.h>

#include "titan/core/cuda/cuda_check.h"
#include "titan/ops/cuda/common.cuh"
#include "titan/ops/cuda/cublaslt.h"
#include "titan/ops/cuda/gemm.h"
#include "titan/ops/matmul.h"

namespace titan::ops::cuda {
namespace {

cudaDataType_t cuda_data_type(DType dtype) {
  TITAN_CHECK(dtype == DType::F32 || dtype == DType::BF16)
      << "matmul (cuda): no cuBLASLt type for " << dtype_name(dtype);
  return dtype == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
}

// The column-major layout of a row-major [rows, cols] matrix: cols x rows, leading dim ld.
void make_layout(Layout& out, const DeviceMatrix& m) {
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&out.layout, cuda_data_type(m.dtype), uint64_t(m.cols),
                                          uint64_t(m.rows), m.ld));
}

template <class T>
__global__ void scale_kernel(T* c, int64_t n, float beta);

template <>
__global__ void scale_kernel<float>(float* c, int64_t n, float beta) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
}

template <>
__global__ void scale_kernel<__nv_bfloat16>(__nv_bfloat16* c, int64_t n, float beta) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) c[i] = __float2bfloat16(beta == 0.0f ? 0.0f : beta * __bfloat162float(c[i]));
}

// K = 0: the product is an empty sum, so C = beta * C (and 0 when beta = 0, even over NaN).
void scale_in_place(Tensor& c, float beta) {
  if (beta == 1.0f) return;
  const int64_t n = c.numel();
  const int threads = 256;
  const auto blocks = unsigned(ceil_div(n, threads));
  if (c.dtype() == DType::F32) {
    scale_kernel<float><<<blocks, threads, 0, compute_stream()>>>(
        static_cast<float*>(c.raw_mutable_data()), n, beta);
  } else {
    scale_kernel<__nv_bfloat16><<<blocks, threads, 0, compute_stream()>>>(
        static_cast<__nv_bfloat16*>(c.raw_mutable_data()), n, beta);
  }
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void matmul(const Tensor& a, Transpose transpose_a, const Tensor& b, Transpose transpose_b,
            Tensor& c, float alpha, float beta) {
  // Every check that needs no device comes first, so bad calls fail the same way anywhere.
  const GemmShape s = check_matmul(a, transpose_a, b, transpose_b, c, kFloatDTypes);
  const Device device = a.device();
  TITAN_CHECK(device.is_cuda() && b.device() == device && c.device() == device)
      << "matmul (cuda): operands must be on one CUDA device, got A on " << a.device() << ", B on "
      << b.device() << ", C on " << c.device();
  if (s.m == 0 || s.n == 0) return;

  DeviceGuard guard(device.index);
  if (s.k == 0) {
    scale_in_place(c, beta);
    return;
  }
  gemm(device.index, device_matrix(a), transpose_a, device_matrix(b), transpose_b,
       device_matrix(c), alpha, beta, "matmul");
}

const CublasLtDevice& cublaslt_device(int device_index) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<CublasLtDevice>> devices;
  std::lock_guard lock(mutex);
  TITAN_CHECK(device_index >= 0 && device_index < 64) << "bad CUDA device " << device_index;
  if (devices.size() <= size_t(device_index)) devices.resize(size_t(device_index) + 1);
  if (!devices[size_t(device_index)]) {
    auto device = std::make_unique<CublasLtDevice>();
    CUBLAS_CHECK(cublasLtCreate(&device->handle));
    CUDA_CHECK(cudaMalloc(&device->workspace, kCublasLtWorkspaceBytes));
    devices[size_t(device_index)] = std::move(device);
  }
  return *devices[size_t(device_index)];
}

void gemm(int device_index, const DeviceMatrix& a, Transpose transpose_a, const DeviceMatrix& b,
          Transpose transpose_b, const DeviceMatrix& c, float alpha, float beta, const char* op_name) {
  const int64_t m = transpose_a == Transpose::Yes ? a.cols : a.rows;
  const int64_t k = transpose_a == Transpose::Yes ? a.rows : a.cols;
  const int64_t n = transpose_b == Transpose::Yes ? b.rows : b.cols;
  TITAN_CHECK(k >= 1 && (transpose_b == Transpose::Yes ? b.cols : b.rows) == k && c.rows == m &&
              c.cols == n)
      << op_name << " (cuda): GEMM operands do not fit: " << m << "x" << k << " times "
      << (transpose_b == Transpose::Yes ? b.cols : b.rows) << "x" << n << " into " << c.rows
      << "x" << c.cols;
  if (m == 0 || n == 0) return;
  const CublasLtDevice& context = cublaslt_device(device_index);

  MatmulDesc op;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&op.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Swapped operands (see the top of the file): cuBLASLt's A is our B, its B is our A.
  const cublasOperation_t lt_transa = transpose_b == Transpose::Yes ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t lt_transb = transpose_a == Transpose::Yes ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSA, &lt_transa,
                                              sizeof(lt_transa)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSB, &lt_transb,
                                              sizeof(lt_transb)));
  Layout lt_a, lt_b, lt_c;
  make_layout(lt_a, b);
  make_layout(lt_b, a);
  make_layout(lt_c, c);

  const void* lt_a_data = b.data;
  const void* lt_b_data = a.data;
  void* c_data = const_cast<void*>(c.data);
  Preference preference;
  make_preference(preference, lt_a_data, lt_b_data, c_data);

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(context.handle, op.desc, lt_a.layout, lt_b.layout,
                                              lt_c.layout, lt_c.layout, preference.preference, 1,
                                              &heuristic, &found));
  TITAN_CHECK(found > 0) << op_name << " (cuda): cuBLASLt has no algorithm for " << m << "x" << n
                         << "x" << k << " " << dtype_name(a.dtype) << " -> "
                         << dtype_name(c.dtype) << " at alignments " << alignment_bytes(a.data)
                         << "/" << alignment_bytes(b.data) << "/" << alignment_bytes(c_data)
                         << " bytes (leading dims " << a.ld << ", " << b.ld << ", " << c.ld
                         << ")";
  // D = C: cuBLASLt writes in place, and with beta = 0 it does not read C.
  CUBLAS_CHECK(cublasLtMatmul(context.handle, op.desc, &alpha, lt_a_data, lt_a.layout, lt_b_data,
                              lt_b.layout, &beta, c_data, lt_c.layout, c_data, lt_c.layout,
                              &heuristic.algo, context.workspace, kCublasLtWorkspaceBytes,
                              compute_stream()));
}

}  // namespace titan::ops::cuda

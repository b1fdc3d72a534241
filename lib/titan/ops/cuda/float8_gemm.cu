// The Float8 GEMM through cuBLASLt (contract in ops/float8_gemm.h).
//
// cuBLASLt is column-major (ops/cuda/matmul.cu explains the swap): the row-major
// c[M, N] = a_q[M, K] b_q[N, K]^T is the column-major D^T[N, M] = op(A) op(B) with
// cuBLASLt's A = b_q's bytes (column-major K x N, ld K, op T) and its B = a_q's bytes
// (K x M, ld K, op N): "TN", the one layout its fp8 kernels take. So its "M" is our N and
// its scale vectors swap too: cuBLASLt's A scale is 1/b_scale ([N] in outer-vector mode),
// its B scale 1/a_scale ([M]).
//
// Each device gets one cuBLASLt handle, one 32 MiB workspace and a buffer for the
// reciprocal scales, made on first use and kept for the life of the process (as
// matmul.cu's; a second handle and workspace because matmul.cu keeps its own private).
// The buffers are cudaMalloc'd, not counted as tensors. Everything queues on the device's
// compute stream, the only user of these buffers.
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "titan/core/cuda/cuda_check.h"
#include "titan/ops/checks.h"
#include "titan/ops/cuda/common.cuh"
#include "titan/ops/cuda/cublaslt.h"
#include "titan/ops/float8_gemm.h"

namespace titan::ops::cuda {
namespace {

// Per device: the buffer of the scales' reciprocals (cuBLASLt's handle and workspace are
// the backend's, ops/cuda/cublaslt.h).
struct DeviceContext {
  float* reciprocals = nullptr;  // grows to the largest M + N seen
  size_t reciprocal_bytes = 0;
};

DeviceContext& device_context(int device_index) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<DeviceContext>> contexts;
  std::lock_guard lock(mutex);
  TITAN_CHECK(device_index >= 0 && device_index < 64) << "bad CUDA device " << device_index;
  if (contexts.size() <= size_t(device_index)) contexts.resize(size_t(device_index) + 1);
  std::unique_ptr<DeviceContext>& context = contexts[size_t(device_index)];
  if (!context) context = std::make_unique<DeviceContext>();
  return *context;
}

// At least `bytes` of reciprocal buffer. Growing waits for the compute stream, whose queued
// GEMMs may still read the old buffer; it happens a handful of times per process.
float* reciprocal_buffer(DeviceContext& context, size_t bytes) {
  if (context.reciprocal_bytes < bytes) {
    size_t grown = 4096;
    while (grown < bytes) grown *= 2;
    if (context.reciprocals != nullptr) {
      CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
      CUDA_CHECK(cudaFree(context.reciprocals));
      context.reciprocals = nullptr;
      context.reciprocal_bytes = 0;
    }
    CUDA_CHECK(cudaMalloc(&context.reciprocals, grown));
    context.reciprocal_bytes = grown;
  }
  return context.reciprocals;
}

template <class T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                   const T& value) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

cudaDataType_t cuda_data_type(DType dtype) {
  switch (dtype) {
    case DType::F8E4M3: return CUDA_R_8F_E4M3;
    case DType::F8E5M2: return CUDA_R_8F_E5M2;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F32: return CUDA_R_32F;
    default: break;
  }
  TITAN_FAIL() << "float8_gemm (cuda): no cuBLASLt type for " << dtype_name(dtype);
  return CUDA_R_32F;  // not reached
}

bool is_float8(DType dtype) { return dtype == DType::F8E4M3 || dtype == DType::F8E5M2; }

// reciprocal_a[i] = 1 / a_scale[i] for i < m (a [1] scale broadcast when a_count is 1),
// then likewise for b: IEEE f32 division.
__global__ void reciprocals_kernel(const float* a_scale, int64_t a_count, float* reciprocal_a,
                                   int64_t m, const float* b_scale, int64_t b_count,
                                   float* reciprocal_b, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m + n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (i < m) {
      reciprocal_a[i] = __frcp_rn(a_scale[a_count == 1 ? 0 : i]);
    } else {
      const int64_t j = i - m;
      reciprocal_b[j] = __frcp_rn(b_scale[b_count == 1 ? 0 : j]);
    }
  }
}

struct Float8GemmShape {
  int64_t m, n, k;
  bool rowwise;  // outer-vector scales (either scale has more than one element)
};

// Every check that needs no device, in the words the other ops use.
Float8GemmShape check_float8_gemm(const Tensor& a_q, const Tensor& a_scale, const Tensor& b_q,
                                  const Tensor& b_scale, const Tensor& c) {
  const char* op = "float8_gemm";
  TITAN_CHECK(a_q.defined() && a_q.dim() >= 2)
      << op << ": a_q must be [M, K], got " << (a_q.defined() ? shape_string(a_q.shape()) : "none");
  TITAN_CHECK(b_q.defined() && b_q.dim() == 2)
      << op << ": b_q must be [N, K], got " << (b_q.defined() ? shape_string(b_q.shape()) : "none");
  TITAN_CHECK(is_float8(a_q.dtype()) && is_float8(b_q.dtype()))
      << op << ": a_q and b_q must be f8e4m3 or f8e5m2, got " << dtype_name(a_q.dtype())
      << " and " << dtype_name(b_q.dtype());
  TITAN_CHECK(a_q.dtype() == DType::F8E4M3 || b_q.dtype() == DType::F8E4M3)
      << op << ": f8e5m2 x f8e5m2 has no cuBLASLt kernel; one operand must be f8e4m3";
  check_float_dtype(c, kFloatDTypes, op, "c");
  const int64_t k = a_q.size(-1);
  int64_t m = 1;
  for (int d = 0; d + 1 < a_q.dim(); ++d) m *= a_q.size(d);
  const int64_t n = b_q.size(0);
  TITAN_CHECK(b_q.size(1) == k) << op << ": b_q has shape " << shape_string(b_q.shape())
                                << ", expected [N, " << k << "] (K of a_q)";
  Shape c_shape = a_q.shape();
  c_shape.back() = n;
  check_shape(c, c_shape, op, "c");
  TITAN_CHECK(a_scale.defined() && b_scale.defined() && a_scale.dtype() == DType::F32 &&
              b_scale.dtype() == DType::F32)
      << op << ": a_scale and b_scale must be f32";
  TITAN_CHECK(a_scale.dim() == 1 && (a_scale.numel() == 1 || a_scale.numel() == m))
      << op << ": a_scale has shape " << shape_string(a_scale.shape()) << ", expected [1] or ["
      << m << "]";
  TITAN_CHECK(b_scale.dim() == 1 && (b_scale.numel() == 1 || b_scale.numel() == n))
      << op << ": b_scale has shape " << shape_string(b_scale.shape()) << ", expected [1] or ["
      << n << "]";
  TITAN_CHECK(k % 16 == 0 && n % 16 == 0)
      << op << ": K = " << k << " and N = " << n
      << " must be multiples of 16 (cuBLASLt's fp8 kernels read 16-byte rows)";
  const bool rowwise = a_scale.numel() != 1 || b_scale.numel() != 1;
  return {m, n, k, rowwise};
}

}  // namespace

bool float8_gemm_supported(int device_index) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_index) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_index) !=
          cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls start clean
    return false;
  }
  return major > 8 || (major == 8 && minor >= 9);
}

void float8_gemm(const Tensor& a_q, const Tensor& a_scale, const Tensor& b_q,
                 const Tensor& b_scale, Tensor& c, Accumulate accumulate) {
  const Float8GemmShape s = check_float8_gemm(a_q, a_scale, b_q, b_scale, c);
  check_on_one_device({{&a_q, "a_q"}, {&a_scale, "a_scale"}, {&b_q, "b_q"}, {&b_scale, "b_scale"},
                       {&c, "c"}},
                      "float8_gemm");
  if (s.m == 0 || s.n == 0) return;
  const int device_index = a_q.device().index;
  DeviceGuard guard(device_index);
  if (s.k == 0) {  // an empty sum
    if (accumulate == Accumulate::No) {
      CUDA_CHECK(cudaMemsetAsync(c.raw_mutable_data(), 0, size_t(c.bytes()), compute_stream()));
    }
    return;
  }
  const void* a_data = a_q.raw_data();
  const void* b_data = b_q.raw_data();
  void* c_data = c.raw_mutable_data();
  TITAN_CHECK(alignment_bytes(a_data) >= 16 && alignment_bytes(b_data) >= 16 &&
              alignment_bytes(c_data) >= 16)
      << "float8_gemm (cuda): a_q, b_q and c must start at 16-byte aligned addresses, got "
      << alignment_bytes(a_data) << ", " << alignment_bytes(b_data) << " and "
      << alignment_bytes(c_data) << " bytes";
  DeviceContext& context = device_context(device_index);
  const CublasLtDevice& lt = cublaslt_device(device_index);

  // 1 / scale, cuBLASLt's scale factors: [M] and [N] in outer-vector mode, else one each.
  const int64_t m_scales = s.rowwise ? s.m : 1, n_scales = s.rowwise ? s.n : 1;
  const int64_t b_offset = ceil_div(m_scales, 64) * 64;  // 256-byte aligned vectors
  float* reciprocals =
      reciprocal_buffer(context, size_t(b_offset + ceil_div(n_scales, 64) * 64) * sizeof(float));
  float* reciprocal_a = reciprocals;
  float* reciprocal_b = reciprocals + b_offset;
  const int threads = 256;
  reciprocals_kernel<<<grid_for(m_scales + n_scales, threads), threads, 0, compute_stream()>>>(
      a_scale.data<float>(), a_scale.numel(), reciprocal_a, m_scales, b_scale.data<float>(),
      b_scale.numel(), reciprocal_b, n_scales);
  check_launch("reciprocals_kernel");

  MatmulDesc op;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&op.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  set_attribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_attribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  set_attribute(op.desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, int8_t(0));
  // Swapped operands: cuBLASLt's A is b_q, its B is a_q.
  set_attribute(op.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                static_cast<const void*>(reciprocal_b));
  set_attribute(op.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                static_cast<const void*>(reciprocal_a));
  if (s.rowwise) {
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    set_attribute(op.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode);
    set_attribute(op.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode);
  }

  Layout lt_a, lt_b, lt_c;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lt_a.layout, cuda_data_type(b_q.dtype()),
                                          uint64_t(s.k), uint64_t(s.n), s.k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lt_b.layout, cuda_data_type(a_q.dtype()),
                                          uint64_t(s.k), uint64_t(s.m), s.k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lt_c.layout, cuda_data_type(c.dtype()),
                                          uint64_t(s.n), uint64_t(s.m), s.n));

  Preference preference;
  make_preference(preference, b_data, a_data, c_data);  // cuBLASLt's A is our b

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt.handle, op.desc, lt_a.layout, lt_b.layout,
                                              lt_c.layout, lt_c.layout, preference.preference, 1,
                                              &heuristic, &found));
  TITAN_CHECK(found > 0) << "float8_gemm (cuda): cuBLASLt has no algorithm for " << s.m << "x"
                         << s.n << "x" << s.k << " " << dtype_name(a_q.dtype()) << " x "
                         << dtype_name(b_q.dtype()) << " -> " << dtype_name(c.dtype()) << " with "
                         << (s.rowwise ? "rowwise (outer-vector)" : "tensorwise")
                         << " scales on this device (fp8 needs compute capability 8.9+)";
  const float alpha = 1.0f;
  const float beta = accumulate == Accumulate::Yes ? 1.0f : 0.0f;
  // D = C: cuBLASLt writes in place, and with beta = 0 it does not read C.
  CUBLAS_CHECK(cublasLtMatmul(lt.handle, op.desc, &alpha, b_data, lt_a.layout, a_data,
                              lt_b.layout, &beta, c_data, lt_c.layout, c_data, lt_c.layout,
                              &heuristic.algo, lt.workspace, kCublasLtWorkspaceBytes,
                              compute_stream()));
}

}  // namespace titan::ops::cuda

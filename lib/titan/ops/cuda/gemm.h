// The CUDA backend's one cuBLASLt call (ops/cuda/matmul.cu), for kernels that need more
// than ops::matmul's contiguous tensors: a matrix whose rows start `ld` elements apart (the
// cross-entropy's bf16 dlogits written over its f32 logits rows). Include only from .cu
// files of ops/cuda.
#pragma once

#include <cstdint>

#include "titan/core/dtype.h"
#include "titan/ops/matmul.h"

namespace titan::ops::cuda {

// A row-major [rows, cols] matrix in device memory, rows `ld` elements apart (ld >= cols).
struct DeviceMatrix {
  const void* data;
  DType dtype;  // f32 or bf16
  int64_t rows, cols, ld;
};

// A contiguous 2-D tensor: rows are its last dim apart.
inline DeviceMatrix device_matrix(const Tensor& t) {
  return DeviceMatrix{t.raw_data(), t.dtype(), t.size(0), t.size(1), t.size(1)};
}

// C = alpha * op(A) op(B) + beta * C, row-major, on `device_index`'s compute stream, with the
// types and rounding of ops::cuda::matmul (f32 accumulation; bf16 x bf16 -> f32 or bf16).
// K >= 1 and shapes already checked by the caller; `op` names the caller in errors.
void gemm(int device_index, const DeviceMatrix& a, Transpose transpose_a, const DeviceMatrix& b,
          Transpose transpose_b, const DeviceMatrix& c, float alpha, float beta, const char* op);

}  // namespace titan::ops::cuda

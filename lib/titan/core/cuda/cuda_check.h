// Check macros for the CUDA runtime and cuBLAS(Lt): throw titan::Error with file:line and
// the library's own error string.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "titan/core/error.h"

#define CUDA_CHECK(call)                                                          \
  do {                                                                            \
    const cudaError_t titan_cuda_status_ = (call);                                \
    TITAN_CHECK(titan_cuda_status_ == cudaSuccess)                                \
        << #call << ": " << cudaGetErrorString(titan_cuda_status_);               \
  } while (0)

#define CUBLAS_CHECK(call)                                                        \
  do {                                                                            \
    const cublasStatus_t titan_cublas_status_ = (call);                           \
    TITAN_CHECK(titan_cublas_status_ == CUBLAS_STATUS_SUCCESS)                    \
        << #call << ": " << cublasLtGetStatusString(titan_cublas_status_);          \
  } while (0)

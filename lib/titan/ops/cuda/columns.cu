// Column slices on the GPU (contract in ops/columns.h): one thread per element written,
// f32 or bf16 in memory, f32 arithmetic; sum_column_groups adds a row's G groups in order,
// as the CPU does.
#include <cuda_bf16.h>

#include "titan/ops/columns.h"
#include "titan/ops/cuda/common.cuh"

namespace titan::ops::cuda {
namespace {

constexpr int kThreads = 256;

int64_t columns(const Tensor& t) { return t.size(t.dim() - 1); }

template <class T>
__global__ void copy_columns_kernel(const T* src, int64_t src_stride, int64_t src_col, T* dst,
                                    int64_t dst_stride, int64_t dst_col, int64_t rows,
                                    int64_t width, bool add) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * width;
       i += stride) {
    const int64_t r = i / width, j = i % width;
    const int64_t to = r * dst_stride + dst_col + j;
    const float v = load(src, r * src_stride + src_col + j);
    store(dst, to, add ? load(dst, to) + v : v);
  }
}

// dst[r G + g, dst_col + j] = src[r, j]: one thread per element of dst's columns.
template <class T>
__global__ void broadcast_columns_kernel(const T* src, int64_t width, T* dst, int64_t dst_stride,
                                         int64_t dst_col, int64_t rows, int64_t groups) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t n = rows * groups * width;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t grouped_row = i / width, j = i % width;
    dst[grouped_row * dst_stride + dst_col + j] = src[(grouped_row / groups) * width + j];
  }
}

// dst[r, j] = sum over g in order of src[r G + g, src_col + j].
template <class T>
__global__ void sum_column_groups_kernel(const T* src, int64_t src_stride, int64_t src_col,
                                         T* dst, int64_t width, int64_t rows, int64_t groups) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * width;
       i += stride) {
    const int64_t r = i / width, j = i % width;
    float sum = 0.0f;
    for (int64_t g = 0; g < groups; ++g) {
      sum += load(src, (r * groups + g) * src_stride + src_col + j);
    }
    store(dst, i, sum);
  }
}

// Launches kernel<T> on the compute stream for dtype (f32 or bf16, checked before).
#define TITAN_COLUMNS_LAUNCH(dtype, kernel, n, ...)                                     \
  do {                                                                                  \
    if ((dtype) == DType::F32) {                                                        \
      using T = float;                                                                  \
      kernel<T><<<grid_for((n), kThreads), kThreads, 0, compute_stream()>>>(__VA_ARGS__); \
    } else {                                                                            \
      using T = __nv_bfloat16;                                                          \
      kernel<T><<<grid_for((n), kThreads), kThreads, 0, compute_stream()>>>(__VA_ARGS__); \
    }                                                                                   \
    check_launch(#kernel);                                                              \
  } while (0)

}  // namespace

void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                  int64_t width, Accumulate accumulate) {
  check_copy_columns(src, src_col, dst, dst_col, width, kFloatDTypes);
  check_on_one_device({{&src, "src"}, {&dst, "dst"}}, "copy_columns");
  const DeviceGuard guard(src.device().index);
  const int64_t rows = src.numel() / columns(src);
  if (rows * width == 0) return;
  TITAN_COLUMNS_LAUNCH(src.dtype(), copy_columns_kernel, rows * width, data_as<T>(src),
                       columns(src), src_col, mutable_data_as<T>(dst), columns(dst), dst_col,
                       rows, width, accumulate == Accumulate::Yes);
}

void broadcast_columns(const Tensor& src, Tensor& dst, int64_t dst_col) {
  check_broadcast_columns(src, dst, dst_col, kFloatDTypes, "broadcast_columns");
  check_on_one_device({{&src, "src"}, {&dst, "dst"}}, "broadcast_columns");
  const DeviceGuard guard(src.device().index);
  const int64_t width = columns(src), rows = src.numel() / width;
  const int64_t groups = dst.numel() / columns(dst) / rows;
  if (rows * groups * width == 0) return;
  TITAN_COLUMNS_LAUNCH(src.dtype(), broadcast_columns_kernel, rows * groups * width,
                       data_as<T>(src), width, mutable_data_as<T>(dst), columns(dst), dst_col,
                       rows, groups);
}

void sum_column_groups(const Tensor& src, int64_t src_col, Tensor& dst) {
  check_broadcast_columns(dst, src, src_col, kFloatDTypes, "sum_column_groups");
  check_on_one_device({{&src, "src"}, {&dst, "dst"}}, "sum_column_groups");
  const DeviceGuard guard(src.device().index);
  const int64_t width = columns(dst), rows = dst.numel() / width;
  const int64_t groups = src.numel() / columns(src) / rows;
  if (rows * width == 0) return;
  TITAN_COLUMNS_LAUNCH(src.dtype(), sum_column_groups_kernel, rows * width, data_as<T>(src),
                       columns(src), src_col, mutable_data_as<T>(dst), width, rows, groups);
}

}  // namespace titan::ops::cuda

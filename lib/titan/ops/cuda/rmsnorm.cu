// RMSNorm on the GPU (contract in ops/rmsnorm.h), the CPU kernel's math in f32:
//   forward, backward_input: one thread block per row (rows strided over the grid); the
//     row's sum (of x^2, or of weight*dy*x) is a block reduction in a fixed order.
//   backward_weight: one block per tile of kColumnTile columns; its kRowLanes lanes of
//     threads stride over the rows, then one thread per column adds the lanes' partial
//     sums in lane order and adds the total to dweight once. No atomics, so the result is
//     the same bits on every run (it may differ from the CPU's, which sums in double).
// Storage T is float or __nv_bfloat16; dweight's storage G is float or T.
#include <cuda_bf16.h>

#include "titan/ops/cuda/common.cuh"
#include "titan/ops/rmsnorm.h"

namespace titan::ops::cuda {
namespace {

constexpr int kRowThreads = 256;  // a multiple of 32: block_sum_by_warps works warp by warp
constexpr int kColumnTile = 16;   // dweight: a warp reads 2 rows x 16 columns (bf16: 32 B each)
constexpr int kRowLanes = 32;

// The sum of v over the block, returned to every thread. Fixed order for a fixed block
// size: a butterfly within each warp, then warp totals in warp order.
__device__ float block_sum_by_warps(float v, float* warp_totals /* [32] */) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) warp_totals[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) total += warp_totals[w];
  __syncthreads();  // warp_totals is reused by the next call
  return total;
}

template <class T>
__global__ void rmsnorm_forward_kernel(const T* x, const T* weight, float eps, T* y, float* rstd,
                                       int64_t rows, int64_t D) {
  __shared__ float warp_totals[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * D;
    T* yr = y + row * D;
    float sum_sq = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const float v = load(xr, i);
      sum_sq += v * v;
    }
    sum_sq = block_sum_by_warps(sum_sq, warp_totals);
    const float r = 1.0f / sqrtf(sum_sq / float(D) + eps);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) store(yr, i, load(xr, i) * r * load(weight, i));
    if (threadIdx.x == 0) rstd[row] = r;
  }
}

template <class T>
__global__ void rmsnorm_backward_input_kernel(const T* dy, const T* x, const T* weight,
                                              const float* rstd, T* dx, bool add, int64_t rows,
                                              int64_t D) {
  __shared__ float warp_totals[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * D;
    const T* gr = dy + row * D;
    T* dr = dx + row * D;
    float dot = 0;  // sum(weight * dy * x)
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) dot += load(weight, i) * load(gr, i) * load(xr, i);
    dot = block_sum_by_warps(dot, warp_totals);
    const float r = rstd[row];
    const float c = dot / float(D) * r * r * r;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const float g = r * load(weight, i) * load(gr, i) - c * load(xr, i);
      store(dr, i, add ? load(dr, i) + g : g);
    }
  }
}

// blockDim (kColumnTile, kRowLanes). Column tiles are strided over the grid.
template <class T, class G>
__global__ void rmsnorm_backward_weight_kernel(const T* dy, const T* x, const float* rstd,
                                               G* dweight, int64_t rows, int64_t D) {
  __shared__ float partial[kRowLanes][kColumnTile + 1];
  for (int64_t tile = blockIdx.x; tile * kColumnTile < D; tile += gridDim.x) {
    const int64_t column = tile * kColumnTile + threadIdx.x;
    float sum = 0;
    if (column < D) {
      for (int64_t n = threadIdx.y; n < rows; n += kRowLanes) {
        sum += load(dy, n * D + column) * load(x, n * D + column) * rstd[n];
      }
    }
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && column < D) {
      float total = 0;
      for (int lane = 0; lane < kRowLanes; ++lane) total += partial[lane][threadIdx.x];
      store(dweight, column, load(dweight, column) + total);
    }
    __syncthreads();  // partial is rewritten by the next tile
  }
}

// ---- host side ---------------------------------------------------------------------------

unsigned row_blocks(int64_t rows) { return grid_for(rows, 1, 65535LL * 32); }

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd) {
  check_rmsnorm_forward(x, weight, y, rstd, kFloatDTypes);
  check_on_one_device({{&x, "x"}, {&weight, "weight"}, {&y, "y"}, {&rstd, "rstd"}},
                      "rmsnorm_forward");
  const DeviceGuard guard(x.device().index);
  const int64_t rows = x.size(0), D = x.size(1);
  if (rows == 0) return;
  if (x.dtype() == DType::F32) {
    rmsnorm_forward_kernel<float><<<row_blocks(rows), kRowThreads, 0, compute_stream()>>>(
        data_as<float>(x), data_as<float>(weight), eps, mutable_data_as<float>(y),
        mutable_data_as<float>(rstd), rows, D);
  } else {
    rmsnorm_forward_kernel<__nv_bfloat16><<<row_blocks(rows), kRowThreads, 0, compute_stream()>>>(
        data_as<__nv_bfloat16>(x), data_as<__nv_bfloat16>(weight), eps,
        mutable_data_as<__nv_bfloat16>(y), mutable_data_as<float>(rstd), rows, D);
  }
  check_launch("rmsnorm_forward_kernel");
}

void rmsnorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight,
                            const Tensor& rstd, Tensor& dx, Accumulate accumulate) {
  check_rmsnorm_backward_input(dy, x, weight, rstd, dx, kFloatDTypes);
  check_on_one_device({{&x, "x"}, {&dy, "dy"}, {&weight, "weight"}, {&rstd, "rstd"}, {&dx, "dx"}},
                      "rmsnorm_backward_input");
  const DeviceGuard guard(x.device().index);
  const int64_t rows = x.size(0), D = x.size(1);
  if (rows == 0) return;
  const bool add = accumulate == Accumulate::Yes;
  if (x.dtype() == DType::F32) {
    rmsnorm_backward_input_kernel<float><<<row_blocks(rows), kRowThreads, 0, compute_stream()>>>(
        data_as<float>(dy), data_as<float>(x), data_as<float>(weight), data_as<float>(rstd),
        mutable_data_as<float>(dx), add, rows, D);
  } else {
    rmsnorm_backward_input_kernel<__nv_bfloat16>
        <<<row_blocks(rows), kRowThreads, 0, compute_stream()>>>(
            data_as<__nv_bfloat16>(dy), data_as<__nv_bfloat16>(x), data_as<__nv_bfloat16>(weight),
            data_as<float>(rstd), mutable_data_as<__nv_bfloat16>(dx), add, rows, D);
  }
  check_launch("rmsnorm_backward_input_kernel");
}

void rmsnorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd,
                             Tensor& dweight) {
  check_rmsnorm_backward_weight(dy, x, rstd, dweight, kFloatDTypes);
  check_on_one_device({{&x, "x"}, {&dy, "dy"}, {&rstd, "rstd"}, {&dweight, "dweight"}},
                      "rmsnorm_backward_weight");
  const DeviceGuard guard(x.device().index);
  const int64_t rows = x.size(0), D = x.size(1);
  if (D == 0) return;
  const dim3 threads(kColumnTile, kRowLanes);
  const unsigned blocks = grid_for(D, kColumnTile);
  const cudaStream_t stream = compute_stream();
  if (x.dtype() == DType::F32) {
    rmsnorm_backward_weight_kernel<float, float><<<blocks, threads, 0, stream>>>(
        data_as<float>(dy), data_as<float>(x), data_as<float>(rstd),
        mutable_data_as<float>(dweight), rows, D);
  } else if (dweight.dtype() == DType::F32) {
    rmsnorm_backward_weight_kernel<__nv_bfloat16, float><<<blocks, threads, 0, stream>>>(
        data_as<__nv_bfloat16>(dy), data_as<__nv_bfloat16>(x), data_as<float>(rstd),
        mutable_data_as<float>(dweight), rows, D);
  } else {
    rmsnorm_backward_weight_kernel<__nv_bfloat16, __nv_bfloat16><<<blocks, threads, 0, stream>>>(
        data_as<__nv_bfloat16>(dy), data_as<__nv_bfloat16>(x), data_as<float>(rstd),
        mutable_data_as<__nv_bfloat16>(dweight), rows, D);
  }
  check_launch("rmsnorm_backward_weight_kernel");
}

}  // namespace titan::ops::cuda

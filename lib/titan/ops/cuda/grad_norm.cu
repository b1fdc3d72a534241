// Sum of squares on the GPU (contract in ops/grad_norm.h), in two fixed stages:
//   1. a grid of G blocks (G a function of n only), thread t of block b adding x[i]^2 in
//      double for i = b*256 + t, stepping by G*256; each block adds its threads' sums in a
//      fixed tree and writes partials[b];
//   2. one block adds partials[0..G) in a fixed tree.
// Every square of a float is exact in double, so only the order of additions matters, and
// it is fixed: the same bits on every run and every GPU. The partials and the result live
// in this file's __device__ arrays (one copy per device), used in stream order on
// compute_stream(): like cuBLASLt's workspace, two streams must not run this at once.
// sums_of_squares queues both stages for up to kMaxResults tensors (each stage 1 after the
// previous stage 2 on the stream, so the partials are free again), then copies all their
// results back with one wait.
#include <algorithm>
#include <vector>

#include "titan/ops/cuda/common.cuh"
#include "titan/ops/grad_norm.h"

namespace titan::ops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1024;
constexpr int64_t kElementsPerThread = 16;  // fewer blocks for small tensors

constexpr int64_t kMaxResults = 1024;  // tensors per copy back

__device__ double partials[kMaxBlocks];
__device__ double results[kMaxResults];

__global__ void sum_of_squares_blocks(const float* x, int64_t n) {
  __shared__ double shared[kThreads];
  double sum = 0;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = x[i];
    sum += v * v;  // exact square; a fused multiply-add rounds the same
  }
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void sum_of_squares_total(int blocks, int slot) {
  __shared__ double shared[kThreads];
  double sum = 0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) sum += partials[b];
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) results[slot] = total;
}

// Queues both stages for x (non-empty) with its result in results[slot].
void queue_sum_of_squares(const Tensor& x, int slot) {
  const int64_t n = x.numel();
  const int64_t per_block = kThreads * kElementsPerThread;
  const int blocks = int(std::min(kMaxBlocks, ceil_div(n, per_block)));
  sum_of_squares_blocks<<<blocks, kThreads, 0, compute_stream()>>>(x.data<float>(), n);
  check_launch("sum_of_squares_blocks");
  sum_of_squares_total<<<1, kThreads, 0, compute_stream()>>>(blocks, slot);
  check_launch("sum_of_squares_total");
}

}  // namespace

std::vector<double> sums_of_squares(const std::vector<Tensor>& xs) {
  std::vector<double> sums(xs.size(), 0.0);
  if (xs.empty()) return sums;
  const Device device = xs.front().device();
  for (const Tensor& x : xs) {  // every check before any device work
    check_sum_of_squares(x);
    TITAN_CHECK(x.device().is_cuda() && x.device() == device)
        << "sum_of_squares (cuda): a tensor is on " << x.device() << ", the first on " << device;
  }
  DeviceGuard guard(device.index);
  for (size_t first = 0; first < xs.size(); first += size_t(kMaxResults)) {
    const size_t count = std::min(xs.size() - first, size_t(kMaxResults));
    for (size_t k = 0; k < count; ++k) {
      if (xs[first + k].numel() > 0) queue_sum_of_squares(xs[first + k], int(k));
    }
    std::vector<double> chunk(count);
    CUDA_CHECK(cudaMemcpyFromSymbolAsync(chunk.data(), results, count * sizeof(double), 0,
                                         cudaMemcpyDeviceToHost, compute_stream()));
    CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
    for (size_t k = 0; k < count; ++k) {
      if (xs[first + k].numel() > 0) sums[first + k] = chunk[k];  // empty: 0, slot not written
    }
  }
  return sums;
}

double sum_of_squares(const Tensor& x) { return sums_of_squares({x}).front(); }

}  // namespace titan::ops::cuda

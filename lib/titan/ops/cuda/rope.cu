// RoPE on the GPU (contract in ops/rope.h): one thread per adjacent pair (x[2i], x[2i+1])
// of every head, rotated by the table's (cos, sin) of its position, in f32 as on the CPU.
// A thread reads its pair before writing it, so y may be x. The table is f32 on the device.
#include <cuda_bf16.h>

#include "titan/ops/cuda/common.cuh"
#include "titan/ops/rope.h"

namespace titan::ops::cuda {
namespace {

constexpr int kThreads = 256;

// sign = 1 rotates by +angle (forward), -1 by -angle (backward). Pair p of the tensor is
// elements 2p and 2p+1; its position is t = (p / (half * H)) % T, its frequency p % half.
template <class T>
__global__ void rope_kernel(const T* x, const float* freqs, T* y, float sign, int64_t pairs,
                            int64_t T_len, int64_t H, int64_t half) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs; p += stride) {
    const int64_t i = p % half;
    const int64_t t = (p / (half * H)) % T_len;
    const float c = freqs[(t * half + i) * 2], s = sign * freqs[(t * half + i) * 2 + 1];
    const float x0 = load(x, 2 * p), x1 = load(x, 2 * p + 1);
    store(y, 2 * p, x0 * c - x1 * s);
    store(y, 2 * p + 1, x0 * s + x1 * c);
  }
}

void rope_rotate(const Tensor& x, const Tensor& freqs, Tensor& y, float sign, const char* op) {
  // Every check before any device work.
  check_rope(x, freqs, y, kFloatDTypes, op);
  const int64_t T_len = x.size(1), H = x.size(2), hd = x.size(3);
  const Device device = x.device();
  TITAN_CHECK(device.is_cuda() && freqs.device() == device && y.device() == device)
      << op << " (cuda): tensors must be on one CUDA device, got x on " << device
      << ", freqs on " << freqs.device() << ", y on " << y.device();
  const DeviceGuard guard(device.index);
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return;
  const unsigned blocks = grid_for(pairs, kThreads);
  if (x.dtype() == DType::F32) {
    rope_kernel<float><<<blocks, kThreads, 0, compute_stream()>>>(
        data_as<float>(x), data_as<float>(freqs), mutable_data_as<float>(y), sign, pairs, T_len,
        H, hd / 2);
  } else {
    rope_kernel<__nv_bfloat16><<<blocks, kThreads, 0, compute_stream()>>>(
        data_as<__nv_bfloat16>(x), data_as<float>(freqs), mutable_data_as<__nv_bfloat16>(y), sign,
        pairs, T_len, H, hd / 2);
  }
  check_launch("rope_kernel");
}

}  // namespace

void rope_forward(const Tensor& x, const Tensor& freqs, Tensor& y) {
  rope_rotate(x, freqs, y, 1.0f, "rope_forward");
}

void rope_backward(const Tensor& dy, const Tensor& freqs, Tensor& dx) {
  rope_rotate(dy, freqs, dx, -1.0f, "rope_backward");
}

}  // namespace titan::ops::cuda

// RoPE on the GPU (contract in ops/rope.h): one thread per adjacent pair (x[2i], x[2i+1])
// of every head, rotated by the table's (cos, sin) of its position, in f32 as on the CPU.
// A thread reads its pair before writing it, so y may be x. The table is f32 on the device.
#include <cuda_bf16.h>

#include "titan/core/cuda/launch.h"
#include "titan/ops/cuda/element.cuh"
#include "titan/ops/rope.h"

namespace titan::ops::cuda {
namespace {

using titan::cuda::check_launch;
using titan::cuda::DeviceGuard;
using titan::cuda::compute_stream;
using titan::cuda::grid_for;

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
  TITAN_CHECK(x.defined()) << op << ": x is undefined";
  TITAN_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16)
      << op << " (cuda): x is " << dtype_name(x.dtype()) << ", expected f32 or bf16";
  TITAN_CHECK(x.dim() == 4) << op << ": x must be [B, T, H, hd], got " << shape_string(x.shape());
  const int64_t T_len = x.size(1), H = x.size(2), hd = x.size(3);
  TITAN_CHECK(hd % 2 == 0) << op << ": head dim " << hd << " must be even";
  check_shape(freqs, {T_len, hd / 2, 2}, op, "freqs");
  check_dtype(freqs, DType::F32, op, "freqs");
  check_shape(y, x.shape(), op, "y");
  check_dtype(y, x.dtype(), op, "y");
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
        static_cast<const float*>(x.raw_data()), static_cast<const float*>(freqs.raw_data()),
        static_cast<float*>(y.raw_mutable_data()), sign, pairs, T_len, H, hd / 2);
  } else {
    rope_kernel<__nv_bfloat16><<<blocks, kThreads, 0, compute_stream()>>>(
        static_cast<const __nv_bfloat16*>(x.raw_data()), static_cast<const float*>(freqs.raw_data()),
        static_cast<__nv_bfloat16*>(y.raw_mutable_data()), sign, pairs, T_len, H, hd / 2);
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

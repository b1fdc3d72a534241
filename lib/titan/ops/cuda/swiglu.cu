// SwiGLU on the GPU (contract in ops/swiglu.h): elementwise, one thread per element, the
// CPU kernel's f32 formulas (expf, not the fast __expf, so a large negative gate gives
// sigmoid 0 and y = -0, as on the CPU).
#include <cuda_bf16.h>

#include <initializer_list>

#include "titan/ops/cuda/common.cuh"
#include "titan/ops/swiglu.h"

namespace titan::ops::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void swiglu_forward_kernel(const T* a, const T* b, T* y, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = load(a, i);
    const float sigmoid = 1.0f / (1.0f + expf(-x));
    store(y, i, x * sigmoid * load(b, i));
  }
}

template <class T>
__global__ void swiglu_backward_kernel(const T* dy, const T* a, const T* b, T* da, T* db,
                                       int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = load(a, i);
    const float sigmoid = 1.0f / (1.0f + expf(-x));
    const float silu = x * sigmoid;
    const float g = load(dy, i);
    store(da, i, g * load(b, i) * sigmoid * (1.0f + x * (1.0f - sigmoid)));
    store(db, i, g * silu);
  }
}

// Every tensor on a's device, which must be a CUDA device. After the shared checks, so that
// dtype and shape errors read the same on a machine without a GPU.
void check_beside_a(const Tensor& a, std::initializer_list<NamedTensor> others, const char* op) {
  TITAN_CHECK(a.device().is_cuda()) << op << " (cuda): a is on " << a.device()
                                    << ", expected a CUDA device";
  for (const auto& [t, name] : others) {
    TITAN_CHECK(t->device() == a.device())
        << op << " (cuda): " << name << " is on " << t->device() << ", a on " << a.device();
  }
}

}  // namespace

void swiglu_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  check_swiglu_forward(a, b, y, kFloatDTypes);
  check_beside_a(a, {{&b, "b"}, {&y, "y"}}, "swiglu_forward");
  const DeviceGuard guard(a.device().index);
  const int64_t n = a.numel();
  if (n == 0) return;
  const unsigned blocks = grid_for(n, kThreads);
  if (a.dtype() == DType::F32) {
    swiglu_forward_kernel<float><<<blocks, kThreads, 0, compute_stream()>>>(
        data_as<float>(a), data_as<float>(b), mutable_data_as<float>(y), n);
  } else {
    swiglu_forward_kernel<__nv_bfloat16><<<blocks, kThreads, 0, compute_stream()>>>(
        data_as<__nv_bfloat16>(a), data_as<__nv_bfloat16>(b), mutable_data_as<__nv_bfloat16>(y),
        n);
  }
  check_launch("swiglu_forward_kernel");
}

void swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, Tensor& da, Tensor& db) {
  check_swiglu_backward(dy, a, b, da, db, kFloatDTypes);
  check_beside_a(a, {{&b, "b"}, {&dy, "dy"}, {&da, "da"}, {&db, "db"}}, "swiglu_backward");
  const DeviceGuard guard(a.device().index);
  const int64_t n = a.numel();
  if (n == 0) return;
  const unsigned blocks = grid_for(n, kThreads);
  if (a.dtype() == DType::F32) {
    swiglu_backward_kernel<float><<<blocks, kThreads, 0, compute_stream()>>>(
        data_as<float>(dy), data_as<float>(a), data_as<float>(b), mutable_data_as<float>(da),
        mutable_data_as<float>(db), n);
  } else {
    swiglu_backward_kernel<__nv_bfloat16><<<blocks, kThreads, 0, compute_stream()>>>(
        data_as<__nv_bfloat16>(dy), data_as<__nv_bfloat16>(a), data_as<__nv_bfloat16>(b),
        mutable_data_as<__nv_bfloat16>(da), mutable_data_as<__nv_bfloat16>(db), n);
  }
  check_launch("swiglu_backward_kernel");
}

}  // namespace titan::ops::cuda

// SwiGLU on the GPU (contract in ops/swiglu.h): elementwise, one thread per element, the
// CPU kernel's f32 formulas (expf, not the fast __expf, so a large negative gate gives
// sigmoid 0 and y = -0, as on the CPU).
#include <cuda_bf16.h>

#include <initializer_list>
#include <utility>

#include "titan/core/cuda/launch.h"
#include "titan/ops/cuda/element.cuh"
#include "titan/ops/swiglu.h"

namespace titan::ops::cuda {
namespace {

using titan::cuda::check_launch;
using titan::cuda::DeviceGuard;
using titan::cuda::compute_stream;
using titan::cuda::grid_for;

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

// Every tensor with a's shape, dtype (f32 or bf16) and CUDA device. Checked before any
// device work.
void check_like_a(const Tensor& a, std::initializer_list<std::pair<const Tensor*, const char*>> others,
                  const char* op) {
  TITAN_CHECK(a.defined()) << op << ": a is undefined";
  TITAN_CHECK(a.dtype() == DType::F32 || a.dtype() == DType::BF16)
      << op << " (cuda): a is " << dtype_name(a.dtype()) << ", expected f32 or bf16";
  for (const auto& [t, name] : others) {
    check_shape(*t, a.shape(), op, name);
    check_dtype(*t, a.dtype(), op, name);
  }
  TITAN_CHECK(a.device().is_cuda()) << op << " (cuda): a is on " << a.device()
                                    << ", expected a CUDA device";
  for (const auto& [t, name] : others) {
    TITAN_CHECK(t->device() == a.device())
        << op << " (cuda): " << name << " is on " << t->device() << ", a on " << a.device();
  }
}

template <class T>
const T* in(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}
template <class T>
T* out(Tensor& t) {
  return static_cast<T*>(t.raw_mutable_data());
}

}  // namespace

void swiglu_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  check_like_a(a, {{&b, "b"}, {&y, "y"}}, "swiglu_forward");
  const DeviceGuard guard(a.device().index);
  const int64_t n = a.numel();
  if (n == 0) return;
  const unsigned blocks = grid_for(n, kThreads);
  if (a.dtype() == DType::F32) {
    swiglu_forward_kernel<float><<<blocks, kThreads, 0, compute_stream()>>>(
        in<float>(a), in<float>(b), out<float>(y), n);
  } else {
    swiglu_forward_kernel<__nv_bfloat16><<<blocks, kThreads, 0, compute_stream()>>>(
        in<__nv_bfloat16>(a), in<__nv_bfloat16>(b), out<__nv_bfloat16>(y), n);
  }
  check_launch("swiglu_forward_kernel");
}

void swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, Tensor& da, Tensor& db) {
  check_like_a(a, {{&b, "b"}, {&dy, "dy"}, {&da, "da"}, {&db, "db"}}, "swiglu_backward");
  const DeviceGuard guard(a.device().index);
  const int64_t n = a.numel();
  if (n == 0) return;
  const unsigned blocks = grid_for(n, kThreads);
  if (a.dtype() == DType::F32) {
    swiglu_backward_kernel<float><<<blocks, kThreads, 0, compute_stream()>>>(
        in<float>(dy), in<float>(a), in<float>(b), out<float>(da), out<float>(db), n);
  } else {
    swiglu_backward_kernel<__nv_bfloat16><<<blocks, kThreads, 0, compute_stream()>>>(
        in<__nv_bfloat16>(dy), in<__nv_bfloat16>(a), in<__nv_bfloat16>(b),
        out<__nv_bfloat16>(da), out<__nv_bfloat16>(db), n);
  }
  check_launch("swiglu_backward_kernel");
}

}  // namespace titan::ops::cuda

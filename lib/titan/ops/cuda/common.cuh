// What the CUDA ops share; include from .cu files of ops/cuda only.
//   - core/cuda/launch.h's launch helpers under their short names (every op launches);
//   - element access for kernels templated on the storage type: f32 or bf16 in memory,
//     f32 in registers, bf16 rounded to nearest even on the way out;
//   - fixed-tree block reductions, the same bits on every run for a fixed block size;
//   - launch-dimension arithmetic and typed views of a tensor's device memory;
//   - the check that a call's tensors sit on one CUDA device, for the ops whose errors
//     name the first tensor that does not.
// The device-independent checks (dtypes, shapes) are not here: every backend shares them,
// from ops/<op>.cpp.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

#include "titan/core/cuda/launch.h"
#include "titan/core/tensor.h"

namespace titan::ops::cuda {

using titan::cuda::check_launch;
using titan::cuda::compute_stream;
using titan::cuda::DeviceGuard;
using titan::cuda::grid_for;

// ---- element access --------------------------------------------------------------------

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);  // round to nearest even
}

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);  // round to nearest even
}

// ---- block reductions ------------------------------------------------------------------

// The max and the sum of v over the block (blockDim.x a power of two, `shared` one slot per
// thread) in a fixed tree; every thread gets the result, and `shared` is free again on
// return.
__device__ __forceinline__ float block_max(float v, float* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + half]);
    }
    __syncthreads();
  }
  const float result = shared[0];
  __syncthreads();  // shared is reused by the next reduction
  return result;
}
__device__ __forceinline__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  const double result = shared[0];
  __syncthreads();
  return result;
}

// ---- host side -------------------------------------------------------------------------

// Blocks of `block` items covering n items (n >= 0).
inline int64_t ceil_div(int64_t n, int64_t block) { return (n + block - 1) / block; }

// A tensor's device memory as the kernel's storage type (__nv_bfloat16 has no DType of its
// own, so Tensor::data<T> cannot check it; the caller has checked the dtype).
template <class T>
const T* data_as(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}
template <class T>
T* mutable_data_as(Tensor& t) {
  return static_cast<T*>(t.raw_mutable_data());
}

using NamedTensor = std::pair<const Tensor*, const char*>;

// Every tensor on the first one's device, which must be a CUDA device. Called after the
// shared checks, so that dtype and shape errors read the same on a machine without a GPU.
inline void check_on_one_device(std::initializer_list<NamedTensor> tensors, const char* op) {
  const Device device = tensors.begin()->first->device();
  for (const auto& [t, name] : tensors) {
    TITAN_CHECK(device.is_cuda() && t->device() == device)
        << op << " (cuda): " << name << " is on " << t->device() << "; every tensor must be on "
        << (device.is_cuda() ? "one CUDA device" : "a CUDA device");
  }
}

}  // namespace titan::ops::cuda

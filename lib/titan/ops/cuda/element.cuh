// Element access for kernels templated on the storage type: f32 or bf16 in memory, f32 in
// registers (docs/design.md, "Numerics contract": bf16 storage, fp32 arithmetic).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace titan::ops::cuda {

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);  // round to nearest even
}

}  // namespace titan::ops::cuda

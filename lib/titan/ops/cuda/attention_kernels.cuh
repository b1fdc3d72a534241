// The FlashAttention-2 kernels' shared parts (contract in ops/attention.h): tile sizes, the
// shared-memory layouts that the plan sizes and the kernels carve, the dims every kernel
// takes, the device helpers of both kernel families, and each family's launches, which the
// entry file picks between:
//   ops/cuda/attention.cu       the plan, workspace sizes, the GPU's own checks, the
//                               kernels of neither family (D = rowsum(dout * out), merge),
//                               the entry points
//   ops/cuda/attention_simt.cu  SIMT tiles: f32, and bf16 with any head dim up to 256
//   ops/cuda/attention_wmma.cu  tensor-core tiles (WMMA bf16): bf16, hd % 16 == 0, hd <= 128
// Include from those three files only.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "titan/ops/attention.h"
#include "titan/ops/attention_mask.h"
#include "titan/ops/cuda/common.cuh"

namespace titan::ops::cuda::flash_attention {

using bf16 = __nv_bfloat16;

constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kMaxTensorCoreHeadDim = 128;
constexpr int kThreads = 128;  // every attention kernel: 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kSimtBlockQ = 16;          // SIMT forward / dq: query rows per block
constexpr int kSimtBlockK = 32;          // SIMT forward: keys per tile (one per lane)
constexpr int kSimtBackwardBlock = 16;   // SIMT backward: queries and keys per tile
constexpr int kTcBlock = 64;             // tensor-core tiles: 64 x 64, 16 rows per warp
constexpr int kScoreLd = kTcBlock + 4;   // f32 score tiles (WMMA: ldm % 4 == 0)
constexpr int kProbLd = kTcBlock + 8;    // bf16 P / dS tiles (WMMA: ldm % 8 == 0)
constexpr int64_t kMaxSharedBytes = 227 * 1024;  // sm_90's per-block opt-in maximum
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------
// The plan: which kernel, which tiles, how much shared memory (host bookkeeping)
// ---------------------------------------------------------------------------------------

// Shared-memory layouts, in bytes, shared by the plan (host) and the kernels (device).
// Padding the leading dimensions keeps WMMA fragment pointers 32-byte aligned and spreads
// rows over banks; the SIMT tiles pad k / v rows by one float for the same reason.
__host__ __device__ constexpr int tc_half_ld(int hd) { return hd + 8; }   // bf16 q/k/v/dO tiles
__host__ __device__ constexpr int tc_float_ld(int hd) { return hd + 4; }  // f32 accumulators
__host__ __device__ constexpr int64_t tc_half_tile(int hd) { return int64_t(kTcBlock) * tc_half_ld(hd) * 2; }
__host__ __device__ constexpr int64_t tc_float_tile(int hd) { return int64_t(kTcBlock) * tc_float_ld(hd) * 4; }
constexpr int64_t kTcScoreBytes = int64_t(kTcBlock) * kScoreLd * 4;
constexpr int64_t kTcProbBytes = int64_t(kTcBlock) * kProbLd * 2;
constexpr int64_t kTcRowBytes = int64_t(kTcBlock) * 4;

// q, k, v tiles; scores; P; output accumulator; m; l
inline int64_t tc_forward_bytes(int hd) {
  return 3 * tc_half_tile(hd) + kTcScoreBytes + kTcProbBytes + tc_float_tile(hd) + 2 * kTcRowBytes;
}
// k, v, q, dO tiles; S^T and dP^T; P^T and dS^T; dk and dv accumulators; lse, D
inline int64_t tc_dkdv_bytes(int hd) {
  return 4 * tc_half_tile(hd) + 2 * kTcScoreBytes + 2 * kTcProbBytes + 2 * tc_float_tile(hd) +
         2 * kTcRowBytes;
}
// q, dO, k, v tiles; S and dP; dS; dq accumulator; lse, D
inline int64_t tc_dq_bytes(int hd) {
  return 4 * tc_half_tile(hd) + 2 * kTcScoreBytes + kTcProbBytes + tc_float_tile(hd) +
         2 * kTcRowBytes;
}
// q; k (padded); v; acc; P; m, l, rescale
__host__ __device__ constexpr int64_t simt_forward_floats(int hd) {
  return int64_t(kSimtBlockQ) * hd + int64_t(kSimtBlockK) * (hd + 1) + int64_t(kSimtBlockK) * hd +
         int64_t(kSimtBlockQ) * hd + kSimtBlockQ * kSimtBlockK + 3 * kSimtBlockQ;
}
// k, v, q, dO (padded); two accumulators; P and dS; lse, D
__host__ __device__ constexpr int64_t simt_backward_floats(int hd) {
  return 4 * int64_t(kSimtBackwardBlock) * (hd + 1) + 2 * int64_t(kSimtBackwardBlock) * hd +
         2 * kSimtBackwardBlock * kSimtBackwardBlock + 2 * kSimtBackwardBlock;
}

// ---------------------------------------------------------------------------------------
// Device helpers
// ---------------------------------------------------------------------------------------

// What every kernel takes: the checked dims, Hq / Hkv, the scale and the mask (causal or
// not, and the device pointers of the positions and documents, null when absent).
struct Dims {
  int64_t B, T, Tk, Hq, Hkv, hd, group;
  float scale;
  AttentionMaskView mask;
};

// Butterfly reductions: at every step lanes a and a^o add the same two values, so every
// lane ends with the same bits, in an order fixed by the code.
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ int64_t q_index(const Dims& d, int64_t b, int64_t i, int64_t h) {
  return ((b * d.T + i) * d.Hq + h) * d.hd;
}
__device__ __forceinline__ int64_t kv_index(const Dims& d, int64_t b, int64_t j, int64_t g) {
  return ((b * d.Tk + j) * d.Hkv + g) * d.hd;
}
__device__ __forceinline__ int64_t row_index(const Dims& d, int64_t b, int64_t h, int64_t i) {
  return (b * d.Hq + h) * d.T + i;  // lse, D
}
// Key j visible to query i of batch row b: ops/attention.h's rule, through the view's
// accessors. Without positions and documents it is !causal || j <= i, the plain masks.
__device__ __forceinline__ bool visible(const Dims& d, int64_t b, int64_t i, int64_t j) {
  const AttentionMaskView& m = d.mask;
  if (m.causal && m.key_position(j) > m.query_position(i)) return false;
  return !m.q_doc || m.query_document(b, i) == m.key_document(b, j);
}

// The keys a query block [i0, i0 + nq) walks (forward, dq): up to the diagonal when causal
// by index, the plain causal bound; with positions every key block, each skipped whole
// when tile_visible says it is empty.
__device__ __forceinline__ int64_t key_end(const Dims& d, int64_t i0, int nq) {
  return d.mask.causal && !d.mask.q_pos ? i0 + nq : d.Tk;
}
// The first query block a key block at j0 meets (dk, dv): the diagonal when causal by index
// (query and key blocks align there), else the first, the later ones skipped as above.
__device__ __forceinline__ int64_t query_begin(const Dims& d, int64_t j0) {
  return d.mask.causal && !d.mask.q_pos ? j0 : 0;
}

// rows x hd elements of a [.., rows, heads, hd] tensor starting at `first` (row stride
// `row_stride` elements) into a shared tile with leading dimension ld; rows >= valid are 0.
template <class T, class S>
__device__ void load_tile(const T* __restrict__ src, int64_t row_stride, int rows, int valid,
                          int hd, S* dst, int ld) {
  for (int x = threadIdx.x; x < rows * hd; x += blockDim.x) {
    const int r = x / hd, e = x % hd;
    float value = r < valid ? to_float(src[int64_t(r) * row_stride + e]) : 0.0f;
    if constexpr (sizeof(S) == 4) {
      dst[r * ld + e] = value;
    } else {
      dst[r * ld + e] = __float2bfloat16(value);  // bf16 -> f32 -> bf16: exact
    }
  }
}

// dst[row r] = (scale * acc[r] (+ dst[r] when add)) for r < valid, rounded to T.
template <class T>
__device__ void store_rows(const float* acc, int ld, int valid, int hd, float scale, bool add,
                           T* __restrict__ dst, int64_t row_stride) {
  for (int x = threadIdx.x; x < valid * hd; x += blockDim.x) {
    const int r = x / hd, e = x % hd;
    T* p = dst + int64_t(r) * row_stride + e;
    const float value = scale * acc[r * ld + e];
    *p = from_float<T>(add ? to_float(*p) + value : value);
  }
}

// ---------------------------------------------------------------------------------------
// Launches, on compute_stream() with the device set and every argument checked
// ---------------------------------------------------------------------------------------

// Shared memory beyond 48 KiB needs the kernel's opt-in, once per kernel and device.
template <class Kernel>
void allow_shared_bytes(Kernel kernel, int64_t bytes) {
  TITAN_CHECK(bytes <= kMaxSharedBytes) << "attention (cuda): " << bytes << " bytes of shared memory";
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// Each family's launches, for a plan of its path. The forward writes out and lse; the
// backward, given D (the softmax row term, already in the workspace), writes dk and dv,
// then dq (= or += per add).
template <class T>
void forward_simt(const Dims& d, const AttentionPlan& plan, const T* q, const T* k, const T* v,
                  T* out, float* lse);
template <class T>
void backward_simt(const Dims& d, const AttentionPlan& plan, const T* q, const T* k,
                   const T* v, const T* dout, const float* lse, const float* D, T* dq, T* dk,
                   T* dv, bool add);
void forward_wmma(const Dims& d, const AttentionPlan& plan, const bf16* q, const bf16* k,
                  const bf16* v, bf16* out, float* lse);
void backward_wmma(const Dims& d, const AttentionPlan& plan, const bf16* q, const bf16* k,
                   const bf16* v, const bf16* dout, const float* lse, const float* D, bf16* dq,
                   bf16* dk, bf16* dv, bool add);

}  // namespace titan::ops::cuda::flash_attention

// Attention on the GPU: FlashAttention-2 (contract in ops/attention.h), f32 or bf16 storage,
// f32 accumulation, no T x T matrix anywhere.
//
// Two kernel families, picked per (dtype, head dim) by attention_plan():
//   TensorCore  bf16 with hd % 16 == 0 and hd <= 128 (Llama's 64 and 128): 64 x 64 tiles,
//               4 warps of 16 rows each; the products Q K^T, dO V^T, P V, dS K, P^T dO and
//               dS^T Q run as WMMA bf16 16x16x16 with f32 accumulators. P and dS are rounded
//               to bf16 for their products (as FlashAttention does); the softmax, its
//               running max and sum, and every accumulator stay in f32 (shared memory).
//   Simt        f32, and bf16 with any other hd up to 256: 16-query tiles, one thread per
//               score or per output element, plain f32 loops over shared-memory tiles.
// Head dims above 256 are rejected by name (shared memory), as are dtypes other than f32
// and bf16.
//
// Forward: one block per (b, h, query block), walking the key blocks (up to the diagonal
// when causal) with the online softmax; lse = m + log(l). No workspace.
// Backward (FlashAttention-2's split, deterministic: no atomics, every output element
// written by one thread in one fixed order):
//   1. D[b, h, i] = dout . out, one warp per row, into the workspace;
//   2. dk, dv: one block per (b, kv head, key block) looping over every query head of the
//      group and every query block (from the diagonal, when causal);
//   3. dq: one block per (b, h, query block) looping over the key blocks.
// P is recomputed from lse in both 2 and 3. Merge: one warp per (b, i, h) row.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>

#include "titan/ops/attention.h"
#include "titan/ops/cuda/common.cuh"

namespace titan::ops::cuda {
namespace {

namespace wmma = nvcuda::wmma;
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
int64_t tc_forward_bytes(int hd) {
  return 3 * tc_half_tile(hd) + kTcScoreBytes + kTcProbBytes + tc_float_tile(hd) + 2 * kTcRowBytes;
}
// k, v, q, dO tiles; S^T and dP^T; P^T and dS^T; dk and dv accumulators; lse, D
int64_t tc_dkdv_bytes(int hd) {
  return 4 * tc_half_tile(hd) + 2 * kTcScoreBytes + 2 * kTcProbBytes + 2 * tc_float_tile(hd) +
         2 * kTcRowBytes;
}
// q, dO, k, v tiles; S and dP; dS; dq accumulator; lse, D
int64_t tc_dq_bytes(int hd) {
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

}  // namespace

AttentionPlan attention_plan(DType dtype, int64_t hd) {
  TITAN_CHECK(dtype == DType::F32 || dtype == DType::BF16)
      << "attention (cuda): takes f32 or bf16 tensors, got " << dtype_name(dtype);
  TITAN_CHECK(hd >= 1 && hd <= kMaxHeadDim)
      << "attention (cuda): head dim " << hd << " is not supported (1 to " << kMaxHeadDim
      << "; larger tiles would not fit shared memory)";
  AttentionPlan plan{};
  plan.threads = kThreads;
  if (dtype == DType::BF16 && hd % 16 == 0 && hd <= kMaxTensorCoreHeadDim) {
    plan.path = AttentionPath::TensorCore;
    plan.block_q = plan.block_k = kTcBlock;
    plan.forward_shared_bytes = tc_forward_bytes(int(hd));
    plan.backward_dkdv_shared_bytes = tc_dkdv_bytes(int(hd));
    plan.backward_dq_shared_bytes = tc_dq_bytes(int(hd));
  } else {
    plan.path = AttentionPath::Simt;
    plan.block_q = kSimtBlockQ;
    plan.block_k = kSimtBlockK;
    plan.forward_shared_bytes = simt_forward_floats(int(hd)) * 4;
    plan.backward_dkdv_shared_bytes = plan.backward_dq_shared_bytes =
        simt_backward_floats(int(hd)) * 4;
  }
  return plan;
}

int64_t attention_forward_workspace_bytes(int64_t /*B*/, int64_t /*T*/, int64_t /*Hq*/,
                                          int64_t /*Hkv*/, int64_t /*hd*/) {
  return 0;
}

int64_t attention_backward_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t /*Hkv*/,
                                           int64_t /*hd*/) {
  return B * Hq * T * int64_t(sizeof(float));  // D [B, Hq, T]
}

namespace {

// ---------------------------------------------------------------------------------------
// Device helpers
// ---------------------------------------------------------------------------------------

struct Dims {
  int64_t B, T, Tk, Hq, Hkv, hd, group;
  bool causal;
  float scale;
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
__device__ __forceinline__ bool visible(const Dims& d, int64_t i, int64_t j) {
  return !d.causal || j <= i;
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
// SIMT forward
// ---------------------------------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(kThreads)
    forward_simt_kernel(const T* __restrict__ q, const T* __restrict__ k,
                        const T* __restrict__ v, T* __restrict__ out, float* __restrict__ lse,
                        Dims d) {
  extern __shared__ float smem[];
  const int H = int(d.hd), k_ld = H + 1;
  float* qs = smem;
  float* ks = qs + kSimtBlockQ * H;
  float* vs = ks + kSimtBlockK * k_ld;
  float* acc = vs + kSimtBlockK * H;
  float* ps = acc + kSimtBlockQ * H;
  float* m = ps + kSimtBlockQ * kSimtBlockK;
  float* l = m + kSimtBlockQ;
  float* rescale = l + kSimtBlockQ;

  // Causal blocks differ in length: the longest (last query blocks) start first.
  const int64_t query_blocks = (d.T + kSimtBlockQ - 1) / kSimtBlockQ;
  const int64_t task = blockIdx.x;
  const int64_t qb = query_blocks - 1 - task % query_blocks;
  const int64_t h = (task / query_blocks) % d.Hq, b = task / (query_blocks * d.Hq);
  const int64_t g = h / d.group, i0 = qb * kSimtBlockQ;
  const int nq = int(min(int64_t(kSimtBlockQ), d.T - i0));
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  load_tile(q + q_index(d, b, i0, h), d.Hq * d.hd, kSimtBlockQ, nq, H, qs, H);
  for (int x = tid; x < kSimtBlockQ * H; x += kThreads) acc[x] = 0.0f;
  if (tid < kSimtBlockQ) {
    m[tid] = kNegInf;
    l[tid] = 0.0f;
  }
  const int64_t key_end = d.causal ? i0 + nq : d.Tk;
  for (int64_t j0 = 0; j0 < key_end; j0 += kSimtBlockK) {
    const int nk = int(min(int64_t(kSimtBlockK), key_end - j0));
    __syncthreads();  // the last tile's reads of ks, vs, ps are done; initial writes visible
    load_tile(k + kv_index(d, b, j0, g), d.Hkv * d.hd, kSimtBlockK, nk, H, ks, k_ld);
    load_tile(v + kv_index(d, b, j0, g), d.Hkv * d.hd, kSimtBlockK, nk, H, vs, H);
    __syncthreads();
    // Scores and the online softmax: a warp per query row, a lane per key.
    for (int r = warp; r < kSimtBlockQ; r += kWarps) {
      const int j = lane;
      const bool seen = r < nq && j < nk && visible(d, i0 + r, j0 + j);
      float s = kNegInf;
      if (seen) {
        float dot = 0.0f;
        for (int e = 0; e < H; ++e) dot += qs[r * H + e] * ks[j * k_ld + e];
        s = d.scale * dot;
      }
      const float m_old = m[r];
      const float m_new = fmaxf(m_old, warp_max(s));
      const float p = seen ? expf(s - m_new) : 0.0f;  // seen: m_new is finite
      // m_new = -inf only for rows past T, which see no key: leave them empty.
      const float factor = m_new == kNegInf ? 1.0f : expf(m_old - m_new);
      const float sum = warp_sum(p);
      ps[r * kSimtBlockK + j] = p;
      __syncwarp();  // every lane has read m[r]
      if (lane == 0) {
        m[r] = m_new;
        l[r] = l[r] * factor + sum;
        rescale[r] = factor;
      }
    }
    __syncthreads();
    // acc = acc * rescale + P V: a thread per (row, e).
    for (int x = tid; x < kSimtBlockQ * H; x += kThreads) {
      const int r = x / H, e = x % H;
      float a = acc[x] * rescale[r];
      for (int j = 0; j < nk; ++j) a += ps[r * kSimtBlockK + j] * vs[j * H + e];
      acc[x] = a;
    }
  }
  __syncthreads();
  for (int x = tid; x < nq * H; x += kThreads) {
    const int r = x / H, e = x % H;
    out[q_index(d, b, i0 + r, h) + e] = from_float<T>(acc[x] / l[r]);
  }
  if (tid < nq) lse[row_index(d, b, h, i0 + tid)] = m[tid] + logf(l[tid]);
}

// ---------------------------------------------------------------------------------------
// Tensor-core forward (bf16, hd % 16 == 0, hd <= 128)
// ---------------------------------------------------------------------------------------

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// c[16 x 64] (f32, ld kScoreLd) = a[16 x hd] * b[64 x hd]^T: a's rows and b's rows are
// both row-major bf16 tiles with leading dimension ld (b read as a column-major matrix_b).
__device__ void product_abt(const bf16* a, const bf16* b, int hd, int ld, float* c) {
  for (int n = 0; n < kTcBlock / 16; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < hd; kk += 16) {
      FragA fa;
      FragBCol fb;
      wmma::load_matrix_sync(fa, a + kk, ld);
      wmma::load_matrix_sync(fb, b + n * 16 * ld + kk, ld);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(c + n * 16, acc, kScoreLd, wmma::mem_row_major);
  }
}

// c[16 x hd] (f32, ld c_ld) += a[16 x 64] (bf16, ld kProbLd) * b[64 x hd] (bf16, ld b_ld).
__device__ void product_add_ab(const bf16* a, const bf16* b, int b_ld, int hd, float* c,
                               int c_ld) {
  for (int n = 0; n < hd; n += 16) {
    FragC acc;
    wmma::load_matrix_sync(acc, c + n, c_ld, wmma::mem_row_major);
    for (int kk = 0; kk < kTcBlock; kk += 16) {
      FragA fa;
      FragBRow fb;
      wmma::load_matrix_sync(fa, a + kk, kProbLd);
      wmma::load_matrix_sync(fb, b + kk * b_ld + n, b_ld);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(c + n, acc, c_ld, wmma::mem_row_major);
  }
}

__global__ void __launch_bounds__(kThreads)
    forward_tc_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                      const bf16* __restrict__ v, bf16* __restrict__ out,
                      float* __restrict__ lse, Dims d) {
  extern __shared__ __align__(128) unsigned char shared[];
  const int H = int(d.hd), h_ld = tc_half_ld(H), f_ld = tc_float_ld(H);
  bf16* qs = reinterpret_cast<bf16*>(shared);
  bf16* ks = qs + kTcBlock * h_ld;
  bf16* vs = ks + kTcBlock * h_ld;
  float* ss = reinterpret_cast<float*>(vs + kTcBlock * h_ld);
  bf16* ps = reinterpret_cast<bf16*>(ss + kTcBlock * kScoreLd);
  float* os = reinterpret_cast<float*>(ps + kTcBlock * kProbLd);
  float* m = os + kTcBlock * f_ld;
  float* l = m + kTcBlock;

  const int64_t query_blocks = (d.T + kTcBlock - 1) / kTcBlock;
  const int64_t task = blockIdx.x;
  const int64_t qb = query_blocks - 1 - task % query_blocks;
  const int64_t h = (task / query_blocks) % d.Hq, b = task / (query_blocks * d.Hq);
  const int64_t g = h / d.group, i0 = qb * kTcBlock;
  const int nq = int(min(int64_t(kTcBlock), d.T - i0));
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int r0 = warp * 16;  // this warp's 16 query rows

  load_tile(q + q_index(d, b, i0, h), d.Hq * d.hd, kTcBlock, nq, H, qs, h_ld);
  for (int x = tid; x < kTcBlock * f_ld; x += kThreads) os[x] = 0.0f;
  if (tid < kTcBlock) {
    m[tid] = kNegInf;
    l[tid] = 0.0f;
  }
  const int64_t key_end = d.causal ? i0 + nq : d.Tk;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTcBlock) {
    const int nk = int(min(int64_t(kTcBlock), key_end - j0));
    __syncthreads();  // every warp is done with the last ks, vs; initial writes visible
    load_tile(k + kv_index(d, b, j0, g), d.Hkv * d.hd, kTcBlock, nk, H, ks, h_ld);
    load_tile(v + kv_index(d, b, j0, g), d.Hkv * d.hd, kTcBlock, nk, H, vs, h_ld);
    __syncthreads();
    // S = Q K^T for this warp's rows (unscaled).
    product_abt(qs + r0 * h_ld, ks, H, h_ld, ss + r0 * kScoreLd);
    __syncwarp();
    // Online softmax, row by row, two keys per lane. P is rounded to bf16 for the PV
    // product, and l sums the rounded values, so out stays a convex combination of v.
    for (int rr = 0; rr < 16; ++rr) {
      const int r = r0 + rr;
      float s[2], p[2];
      bool seen[2];
      for (int c = 0; c < 2; ++c) {
        const int j = lane + 32 * c;
        seen[c] = r < nq && j < nk && visible(d, i0 + r, j0 + j);
        s[c] = seen[c] ? d.scale * ss[r * kScoreLd + j] : kNegInf;
      }
      const float m_old = m[r];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(s[0], s[1])));
      const float factor = m_new == kNegInf ? 1.0f : expf(m_old - m_new);
      float sum = 0.0f;
      for (int c = 0; c < 2; ++c) {
        const bf16 rounded = __float2bfloat16(seen[c] ? expf(s[c] - m_new) : 0.0f);
        ps[r * kProbLd + lane + 32 * c] = rounded;
        p[c] = __bfloat162float(rounded);
      }
      sum = warp_sum(p[0] + p[1]);
      for (int e = lane; e < H; e += 32) os[r * f_ld + e] *= factor;
      __syncwarp();  // every lane has read m[r]
      if (lane == 0) {
        m[r] = m_new;
        l[r] = l[r] * factor + sum;
      }
    }
    __syncwarp();  // ps and os rows written by all lanes before the warp's fragment loads
    // O += P V
    product_add_ab(ps + r0 * kProbLd, vs, h_ld, H, os + r0 * f_ld, f_ld);
  }
  __syncwarp();
  for (int rr = 0; rr < 16; ++rr) {
    const int r = r0 + rr;
    if (r >= nq) break;
    const float inv = 1.0f / l[r];
    bf16* orow = out + q_index(d, b, i0 + r, h);
    for (int e = lane; e < H; e += 32) orow[e] = __float2bfloat16(os[r * f_ld + e] * inv);
    if (lane == 0) lse[row_index(d, b, h, i0 + r)] = m[r] + logf(l[r]);
  }
}

// ---------------------------------------------------------------------------------------
// Backward: D = rowsum(dout * out)
// ---------------------------------------------------------------------------------------

template <class T>
__global__ void softmax_row_term_kernel(const T* __restrict__ dout, const T* __restrict__ out,
                                        float* __restrict__ D, Dims d) {
  const int64_t rows = d.B * d.T * d.Hq;
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += warps) {
    float sum = 0.0f;
    for (int64_t e = lane; e < d.hd; e += 32) {
      sum += to_float(dout[row * d.hd + e]) * to_float(out[row * d.hd + e]);
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      const int64_t h = row % d.Hq, i = (row / d.Hq) % d.T, b = row / (d.Hq * d.T);
      D[row_index(d, b, h, i)] = sum;
    }
  }
}

// ---------------------------------------------------------------------------------------
// SIMT backward
// ---------------------------------------------------------------------------------------

// p[r][j] and ds[r][j] (without the scale) for a tile of nq queries x nk keys; a thread per
// pair. q/dO tiles are indexed by r, k/v tiles by j; all with leading dimension ld.
__device__ void simt_probabilities(const Dims& d, const float* qs, const float* dos,
                                   const float* ks, const float* vs, int ld, const float* lse_s,
                                   const float* D_s, int64_t i0, int nq, int64_t j0, int nk,
                                   float* ps, float* dss) {
  constexpr int n = kSimtBackwardBlock;
  const int H = int(d.hd);
  for (int x = threadIdx.x; x < n * n; x += blockDim.x) {
    const int r = x / n, j = x % n;
    float p = 0.0f, ds = 0.0f;
    if (r < nq && j < nk && visible(d, i0 + r, j0 + j)) {
      float s = 0.0f, dp = 0.0f;
      for (int e = 0; e < H; ++e) {
        s += qs[r * ld + e] * ks[j * ld + e];
        dp += dos[r * ld + e] * vs[j * ld + e];
      }
      p = expf(d.scale * s - lse_s[r]);
      ds = p * (dp - D_s[r]);
    }
    ps[x] = p;
    dss[x] = ds;
  }
}

// Shared layout of both SIMT backward kernels (simt_backward_floats).
struct SimtBackwardTiles {
  float *ks, *vs, *qs, *dos, *acc_a, *acc_b, *ps, *dss, *lse_s, *D_s;
  __device__ SimtBackwardTiles(float* smem, int H) {
    constexpr int n = kSimtBackwardBlock;
    const int ld = H + 1;
    ks = smem;
    vs = ks + n * ld;
    qs = vs + n * ld;
    dos = qs + n * ld;
    acc_a = dos + n * ld;
    acc_b = acc_a + n * H;
    ps = acc_b + n * H;
    dss = ps + n * n;
    lse_s = dss + n * n;
    D_s = lse_s + n;
  }
};

__device__ void load_rows(const float* src, int valid, float* dst) {
  if (threadIdx.x < kSimtBackwardBlock) {
    dst[threadIdx.x] = int(threadIdx.x) < valid ? src[threadIdx.x] : 0.0f;
  }
}

// dk, dv of one key block of one kv head: every query head of the group, every query block.
template <class T>
__global__ void __launch_bounds__(kThreads)
    backward_dkdv_simt_kernel(const T* __restrict__ q, const T* __restrict__ k,
                              const T* __restrict__ v, const T* __restrict__ dout,
                              const float* __restrict__ lse, const float* __restrict__ D,
                              T* __restrict__ dk, T* __restrict__ dv, Dims d, bool add) {
  constexpr int n = kSimtBackwardBlock;
  extern __shared__ float smem[];
  const int H = int(d.hd), ld = H + 1;
  SimtBackwardTiles t(smem, H);
  float* dk_acc = t.acc_a;
  float* dv_acc = t.acc_b;

  // Causal: early key blocks are seen by the most queries; they start first.
  const int64_t key_blocks = (d.Tk + n - 1) / n;
  const int64_t task = blockIdx.x;
  const int64_t kb = task % key_blocks;
  const int64_t g = (task / key_blocks) % d.Hkv, b = task / (key_blocks * d.Hkv);
  const int64_t j0 = kb * n;
  const int nk = int(min(int64_t(n), d.Tk - j0));

  load_tile(k + kv_index(d, b, j0, g), d.Hkv * d.hd, n, nk, H, t.ks, ld);
  load_tile(v + kv_index(d, b, j0, g), d.Hkv * d.hd, n, nk, H, t.vs, ld);
  for (int x = threadIdx.x; x < n * H; x += blockDim.x) dk_acc[x] = dv_acc[x] = 0.0f;
  for (int64_t h = g * d.group; h < (g + 1) * d.group; ++h) {
    // Causal: query blocks before this key block see none of it (the blocks align).
    for (int64_t i0 = d.causal ? j0 : 0; i0 < d.T; i0 += n) {
      const int nq = int(min(int64_t(n), d.T - i0));
      __syncthreads();  // the last step's reads of qs, dos, ps, dss are done
      load_tile(q + q_index(d, b, i0, h), d.Hq * d.hd, n, nq, H, t.qs, ld);
      load_tile(dout + q_index(d, b, i0, h), d.Hq * d.hd, n, nq, H, t.dos, ld);
      load_rows(lse + row_index(d, b, h, i0), nq, t.lse_s);
      load_rows(D + row_index(d, b, h, i0), nq, t.D_s);
      __syncthreads();
      simt_probabilities(d, t.qs, t.dos, t.ks, t.vs, ld, t.lse_s, t.D_s, i0, nq, j0, nk, t.ps,
                         t.dss);
      __syncthreads();
      // dv[j] += sum_r p[r][j] dout[r],  dk[j] += sum_r ds[r][j] q[r]: a thread per (j, e).
      for (int x = threadIdx.x; x < n * H; x += blockDim.x) {
        const int j = x / H, e = x % H;
        float a = dv_acc[x], c = dk_acc[x];
        for (int r = 0; r < nq; ++r) {
          a += t.ps[r * n + j] * t.dos[r * ld + e];
          c += t.dss[r * n + j] * t.qs[r * ld + e];
        }
        dv_acc[x] = a;
        dk_acc[x] = c;
      }
    }
  }
  __syncthreads();
  store_rows(dk_acc, H, nk, H, d.scale, add, dk + kv_index(d, b, j0, g), d.Hkv * d.hd);
  store_rows(dv_acc, H, nk, H, 1.0f, add, dv + kv_index(d, b, j0, g), d.Hkv * d.hd);
}

// dq of one query block of one head, over the key blocks it sees.
template <class T>
__global__ void __launch_bounds__(kThreads)
    backward_dq_simt_kernel(const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ v, const T* __restrict__ dout,
                            const float* __restrict__ lse, const float* __restrict__ D,
                            T* __restrict__ dq, Dims d, bool add) {
  constexpr int n = kSimtBackwardBlock;
  extern __shared__ float smem[];
  const int H = int(d.hd), ld = H + 1;
  SimtBackwardTiles t(smem, H);
  float* dq_acc = t.acc_a;

  const int64_t query_blocks = (d.T + n - 1) / n;
  const int64_t task = blockIdx.x;
  const int64_t qb = query_blocks - 1 - task % query_blocks;
  const int64_t h = (task / query_blocks) % d.Hq, b = task / (query_blocks * d.Hq);
  const int64_t g = h / d.group, i0 = qb * n;
  const int nq = int(min(int64_t(n), d.T - i0));

  load_tile(q + q_index(d, b, i0, h), d.Hq * d.hd, n, nq, H, t.qs, ld);
  load_tile(dout + q_index(d, b, i0, h), d.Hq * d.hd, n, nq, H, t.dos, ld);
  load_rows(lse + row_index(d, b, h, i0), nq, t.lse_s);
  load_rows(D + row_index(d, b, h, i0), nq, t.D_s);
  for (int x = threadIdx.x; x < n * H; x += blockDim.x) dq_acc[x] = 0.0f;
  const int64_t key_end = d.causal ? i0 + nq : d.Tk;
  for (int64_t j0 = 0; j0 < key_end; j0 += n) {
    const int nk = int(min(int64_t(n), key_end - j0));
    __syncthreads();  // the last step's reads of ks, dss are done; initial writes visible
    load_tile(k + kv_index(d, b, j0, g), d.Hkv * d.hd, n, nk, H, t.ks, ld);
    load_tile(v + kv_index(d, b, j0, g), d.Hkv * d.hd, n, nk, H, t.vs, ld);
    __syncthreads();
    simt_probabilities(d, t.qs, t.dos, t.ks, t.vs, ld, t.lse_s, t.D_s, i0, nq, j0, nk, t.ps,
                       t.dss);
    __syncthreads();
    // dq[r] += sum_j ds[r][j] k[j]: a thread per (r, e).
    for (int x = threadIdx.x; x < n * H; x += blockDim.x) {
      const int r = x / H, e = x % H;
      float a = dq_acc[x];
      for (int j = 0; j < nk; ++j) a += t.dss[r * n + j] * t.ks[j * ld + e];
      dq_acc[x] = a;
    }
  }
  __syncthreads();
  store_rows(dq_acc, H, nq, H, d.scale, add, dq + q_index(d, b, i0, h), d.Hq * d.hd);
}

// ---------------------------------------------------------------------------------------
// Tensor-core backward
// ---------------------------------------------------------------------------------------

__device__ void load_tc_rows(const float* src, int valid, float* dst) {
  if (threadIdx.x < kTcBlock) {
    dst[threadIdx.x] = int(threadIdx.x) < valid ? src[threadIdx.x] : 0.0f;
  }
}

// dk, dv of one 64-key block of one kv head; warp w owns keys 16w .. 16w + 15 and works on
// the transposed tiles S^T = K Q^T and dP^T = V dO^T.
__global__ void __launch_bounds__(kThreads)
    backward_dkdv_tc_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                            const bf16* __restrict__ v, const bf16* __restrict__ dout,
                            const float* __restrict__ lse, const float* __restrict__ D,
                            bf16* __restrict__ dk, bf16* __restrict__ dv, Dims d, bool add) {
  extern __shared__ __align__(128) unsigned char shared[];
  const int H = int(d.hd), h_ld = tc_half_ld(H), f_ld = tc_float_ld(H);
  bf16* ks = reinterpret_cast<bf16*>(shared);
  bf16* vs = ks + kTcBlock * h_ld;
  bf16* qs = vs + kTcBlock * h_ld;
  bf16* dos = qs + kTcBlock * h_ld;
  float* st = reinterpret_cast<float*>(dos + kTcBlock * h_ld);
  float* dpt = st + kTcBlock * kScoreLd;
  bf16* pt = reinterpret_cast<bf16*>(dpt + kTcBlock * kScoreLd);
  bf16* dst = pt + kTcBlock * kProbLd;
  float* dks = reinterpret_cast<float*>(dst + kTcBlock * kProbLd);
  float* dvs = dks + kTcBlock * f_ld;
  float* lse_s = dvs + kTcBlock * f_ld;
  float* D_s = lse_s + kTcBlock;

  const int64_t key_blocks = (d.Tk + kTcBlock - 1) / kTcBlock;
  const int64_t task = blockIdx.x;
  const int64_t kb = task % key_blocks;
  const int64_t g = (task / key_blocks) % d.Hkv, b = task / (key_blocks * d.Hkv);
  const int64_t j0 = kb * kTcBlock;
  const int nk = int(min(int64_t(kTcBlock), d.Tk - j0));
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int r0 = warp * 16;  // this warp's 16 keys

  load_tile(k + kv_index(d, b, j0, g), d.Hkv * d.hd, kTcBlock, nk, H, ks, h_ld);
  load_tile(v + kv_index(d, b, j0, g), d.Hkv * d.hd, kTcBlock, nk, H, vs, h_ld);
  for (int x = tid; x < kTcBlock * f_ld; x += kThreads) dks[x] = dvs[x] = 0.0f;
  for (int64_t h = g * d.group; h < (g + 1) * d.group; ++h) {
    for (int64_t i0 = d.causal ? j0 : 0; i0 < d.T; i0 += kTcBlock) {
      const int nq = int(min(int64_t(kTcBlock), d.T - i0));
      __syncthreads();  // every warp is done with the last qs, dos
      load_tile(q + q_index(d, b, i0, h), d.Hq * d.hd, kTcBlock, nq, H, qs, h_ld);
      load_tile(dout + q_index(d, b, i0, h), d.Hq * d.hd, kTcBlock, nq, H, dos, h_ld);
      load_tc_rows(lse + row_index(d, b, h, i0), nq, lse_s);
      load_tc_rows(D + row_index(d, b, h, i0), nq, D_s);
      __syncthreads();
      product_abt(ks + r0 * h_ld, qs, H, h_ld, st + r0 * kScoreLd);    // S^T = K Q^T
      product_abt(vs + r0 * h_ld, dos, H, h_ld, dpt + r0 * kScoreLd);  // dP^T = V dO^T
      __syncwarp();
      for (int rr = 0; rr < 16; ++rr) {
        const int jj = r0 + rr;
        for (int c = 0; c < 2; ++c) {
          const int ii = lane + 32 * c;
          float p = 0.0f, ds = 0.0f;
          if (jj < nk && ii < nq && visible(d, i0 + ii, j0 + jj)) {
            p = expf(d.scale * st[jj * kScoreLd + ii] - lse_s[ii]);
            ds = p * (dpt[jj * kScoreLd + ii] - D_s[ii]);
          }
          pt[jj * kProbLd + ii] = __float2bfloat16(p);
          dst[jj * kProbLd + ii] = __float2bfloat16(ds);
        }
      }
      __syncwarp();
      product_add_ab(pt + r0 * kProbLd, dos, h_ld, H, dvs + r0 * f_ld, f_ld);  // dv += P^T dO
      product_add_ab(dst + r0 * kProbLd, qs, h_ld, H, dks + r0 * f_ld, f_ld);  // dk += dS^T Q
    }
  }
  __syncthreads();
  store_rows(dks, f_ld, nk, H, d.scale, add, dk + kv_index(d, b, j0, g), d.Hkv * d.hd);
  store_rows(dvs, f_ld, nk, H, 1.0f, add, dv + kv_index(d, b, j0, g), d.Hkv * d.hd);
}

// dq of one 64-query block of one head; warp w owns queries 16w .. 16w + 15.
__global__ void __launch_bounds__(kThreads)
    backward_dq_tc_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, const bf16* __restrict__ dout,
                          const float* __restrict__ lse, const float* __restrict__ D,
                          bf16* __restrict__ dq, Dims d, bool add) {
  extern __shared__ __align__(128) unsigned char shared[];
  const int H = int(d.hd), h_ld = tc_half_ld(H), f_ld = tc_float_ld(H);
  bf16* qs = reinterpret_cast<bf16*>(shared);
  bf16* dos = qs + kTcBlock * h_ld;
  bf16* ks = dos + kTcBlock * h_ld;
  bf16* vs = ks + kTcBlock * h_ld;
  float* ss = reinterpret_cast<float*>(vs + kTcBlock * h_ld);
  float* dps = ss + kTcBlock * kScoreLd;
  bf16* dss = reinterpret_cast<bf16*>(dps + kTcBlock * kScoreLd);
  float* dqs = reinterpret_cast<float*>(dss + kTcBlock * kProbLd);
  float* lse_s = dqs + kTcBlock * f_ld;
  float* D_s = lse_s + kTcBlock;

  const int64_t query_blocks = (d.T + kTcBlock - 1) / kTcBlock;
  const int64_t task = blockIdx.x;
  const int64_t qb = query_blocks - 1 - task % query_blocks;
  const int64_t h = (task / query_blocks) % d.Hq, b = task / (query_blocks * d.Hq);
  const int64_t g = h / d.group, i0 = qb * kTcBlock;
  const int nq = int(min(int64_t(kTcBlock), d.T - i0));
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int r0 = warp * 16;

  load_tile(q + q_index(d, b, i0, h), d.Hq * d.hd, kTcBlock, nq, H, qs, h_ld);
  load_tile(dout + q_index(d, b, i0, h), d.Hq * d.hd, kTcBlock, nq, H, dos, h_ld);
  load_tc_rows(lse + row_index(d, b, h, i0), nq, lse_s);
  load_tc_rows(D + row_index(d, b, h, i0), nq, D_s);
  for (int x = tid; x < kTcBlock * f_ld; x += kThreads) dqs[x] = 0.0f;
  const int64_t key_end = d.causal ? i0 + nq : d.Tk;
  for (int64_t j0 = 0; j0 < key_end; j0 += kTcBlock) {
    const int nk = int(min(int64_t(kTcBlock), key_end - j0));
    __syncthreads();  // every warp is done with the last ks, vs; initial writes visible
    load_tile(k + kv_index(d, b, j0, g), d.Hkv * d.hd, kTcBlock, nk, H, ks, h_ld);
    load_tile(v + kv_index(d, b, j0, g), d.Hkv * d.hd, kTcBlock, nk, H, vs, h_ld);
    __syncthreads();
    product_abt(qs + r0 * h_ld, ks, H, h_ld, ss + r0 * kScoreLd);    // S = Q K^T
    product_abt(dos + r0 * h_ld, vs, H, h_ld, dps + r0 * kScoreLd);  // dP = dO V^T
    __syncwarp();
    for (int rr = 0; rr < 16; ++rr) {
      const int ii = r0 + rr;
      for (int c = 0; c < 2; ++c) {
        const int jj = lane + 32 * c;
        float ds = 0.0f;
        if (ii < nq && jj < nk && visible(d, i0 + ii, j0 + jj)) {
          const float p = expf(d.scale * ss[ii * kScoreLd + jj] - lse_s[ii]);
          ds = p * (dps[ii * kScoreLd + jj] - D_s[ii]);
        }
        dss[ii * kProbLd + jj] = __float2bfloat16(ds);
      }
    }
    __syncwarp();
    product_add_ab(dss + r0 * kProbLd, ks, h_ld, H, dqs + r0 * f_ld, f_ld);  // dq += dS K
  }
  __syncthreads();
  store_rows(dqs, f_ld, nq, H, d.scale, add, dq + q_index(d, b, i0, h), d.Hq * d.hd);
}

// ---------------------------------------------------------------------------------------
// Merge
// ---------------------------------------------------------------------------------------

template <class T>
__global__ void merge_kernel(T* __restrict__ out, float* __restrict__ lse,
                             const T* __restrict__ out_part, const float* __restrict__ lse_part,
                             int64_t B, int64_t T_, int64_t Hq, int64_t hd) {
  const int64_t rows = B * T_ * Hq;
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += warps) {
    const int64_t h = row % Hq, i = (row / Hq) % T_, b = row / (Hq * T_);
    const int64_t at = (b * Hq + h) * T_ + i;
    const float l = lse[at], l_part = lse_part[at];
    const float hi = fmaxf(l, l_part), lo = fminf(l, l_part);
    if (hi == kNegInf) continue;  // both saw no key (uniform across the warp)
    const float merged = hi + log1pf(expf(lo - hi));
    const float w = expf(l - merged), w_part = expf(l_part - merged);
    for (int64_t e = lane; e < hd; e += 32) {
      T* o = out + row * hd + e;
      *o = from_float<T>(w * to_float(*o) + w_part * to_float(out_part[row * hd + e]));
    }
    __syncwarp();  // every lane has read lse[at]
    if (lane == 0) lse[at] = merged;
  }
}

// ---------------------------------------------------------------------------------------
// Host side: the GPU's own checks (after the shared ones of ops/attention.cpp), then
// launches
// ---------------------------------------------------------------------------------------

// Every tensor on q's device, which must be a CUDA device. Checked after shapes and
// dtypes, so that those errors read the same with tensors on any device.
void check_devices(std::initializer_list<NamedTensor> tensors, const Tensor& q, const char* op) {
  TITAN_CHECK(q.device().is_cuda()) << op << " (cuda): tensors must be on a CUDA device, got "
                                    << q.device();
  for (auto [t, name] : tensors) {
    TITAN_CHECK(t->device() == q.device())
        << op << " (cuda): " << name << " is on " << t->device() << ", q on " << q.device();
  }
}

// What the kernels take, once the GPU has kernels for the dtype and head dim and the grid
// holds the blocks.
Dims kernel_dims(const AttentionDims& s, DType dtype, float scale, AttentionMask mask,
                 const char* op) {
  attention_plan(dtype, s.hd);  // throws for an unsupported dtype or head dim
  // One block per (b, head, 16-row block) at most: the grid's x dimension must hold them.
  const int64_t blocks =
      s.B * std::max(s.Hq, s.Hkv) * ceil_div(std::max(s.T, s.Tk), kSimtBackwardBlock);
  TITAN_CHECK(blocks < (int64_t(1) << 31)) << op << " (cuda): " << blocks << " blocks is too many";
  return Dims{s.B, s.T, s.Tk, s.Hq, s.Hkv, s.hd, s.Hq / s.Hkv, mask == AttentionMask::Causal,
              scale};
}

// The f32 workspace, when the op needs one.
float* workspace_floats(Tensor& workspace, int64_t needed_bytes, const Tensor& q, const char* op) {
  if (needed_bytes == 0) return nullptr;
  TITAN_CHECK(workspace.defined()) << op << ": workspace is undefined";
  TITAN_CHECK(workspace.bytes() >= needed_bytes)
      << op << ": workspace has " << workspace.bytes() << " bytes, needs " << needed_bytes
      << " (size it with attention_backward_workspace_bytes for " << q.device() << ")";
  TITAN_CHECK(workspace.device() == q.device())
      << op << " (cuda): workspace is on " << workspace.device() << ", q on " << q.device();
  void* p = workspace.raw_mutable_data();
  TITAN_CHECK(reinterpret_cast<uintptr_t>(p) % alignof(float) == 0)
      << op << ": workspace is not float-aligned";
  return static_cast<float*>(p);
}

// Shared memory beyond 48 KiB needs the kernel's opt-in, once per kernel and device.
template <class Kernel>
void allow_shared_bytes(Kernel kernel, int64_t bytes) {
  TITAN_CHECK(bytes <= kMaxSharedBytes) << "attention (cuda): " << bytes << " bytes of shared memory";
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <class T>
void forward_launch(const Dims& d, const AttentionPlan& plan, const Tensor& q, const Tensor& k,
                    const Tensor& v, Tensor& out, Tensor& lse) {
  const T* qp = static_cast<const T*>(q.raw_data());
  const T* kp = static_cast<const T*>(k.raw_data());
  const T* vp = static_cast<const T*>(v.raw_data());
  T* op = static_cast<T*>(out.raw_mutable_data());
  float* lp = lse.mutable_data<float>();
  const unsigned blocks = unsigned(d.B * d.Hq * ceil_div(d.T, plan.block_q));
  const size_t shared = size_t(plan.forward_shared_bytes);
  if constexpr (std::is_same_v<T, bf16>) {
    if (plan.path == AttentionPath::TensorCore) {
      allow_shared_bytes(forward_tc_kernel, plan.forward_shared_bytes);
      forward_tc_kernel<<<blocks, kThreads, shared, compute_stream()>>>(qp, kp, vp, op, lp, d);
      check_launch("attention forward_tc_kernel");
      return;
    }
  }
  allow_shared_bytes(forward_simt_kernel<T>, plan.forward_shared_bytes);
  forward_simt_kernel<T><<<blocks, kThreads, shared, compute_stream()>>>(qp, kp, vp, op, lp, d);
  check_launch("attention forward_simt_kernel");
}

template <class T>
void backward_launch(const Dims& d, const AttentionPlan& plan, const Tensor& dout,
                     const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                     const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv, bool add, float* D) {
  const T* qp = static_cast<const T*>(q.raw_data());
  const T* kp = static_cast<const T*>(k.raw_data());
  const T* vp = static_cast<const T*>(v.raw_data());
  const T* gp = static_cast<const T*>(dout.raw_data());
  const T* yp = static_cast<const T*>(out.raw_data());
  const float* lp = lse.data<float>();
  T* dqp = static_cast<T*>(dq.raw_mutable_data());
  T* dkp = static_cast<T*>(dk.raw_mutable_data());
  T* dvp = static_cast<T*>(dv.raw_mutable_data());

  softmax_row_term_kernel<T><<<grid_for(d.B * d.T * d.Hq * 32, 256), 256, 0, compute_stream()>>>(
      gp, yp, D, d);
  check_launch("attention softmax_row_term_kernel");

  const bool tc = plan.path == AttentionPath::TensorCore;
  const int64_t kv_block = tc ? kTcBlock : kSimtBackwardBlock;
  const unsigned kv_blocks = unsigned(d.B * d.Hkv * ceil_div(d.Tk, kv_block));
  const unsigned q_blocks = unsigned(d.B * d.Hq * ceil_div(d.T, kv_block));
  const size_t dkdv_shared = size_t(plan.backward_dkdv_shared_bytes);
  const size_t dq_shared = size_t(plan.backward_dq_shared_bytes);
  if constexpr (std::is_same_v<T, bf16>) {
    if (tc) {
      allow_shared_bytes(backward_dkdv_tc_kernel, plan.backward_dkdv_shared_bytes);
      backward_dkdv_tc_kernel<<<kv_blocks, kThreads, dkdv_shared, compute_stream()>>>(
          qp, kp, vp, gp, lp, D, dkp, dvp, d, add);
      check_launch("attention backward_dkdv_tc_kernel");
      allow_shared_bytes(backward_dq_tc_kernel, plan.backward_dq_shared_bytes);
      backward_dq_tc_kernel<<<q_blocks, kThreads, dq_shared, compute_stream()>>>(
          qp, kp, vp, gp, lp, D, dqp, d, add);
      check_launch("attention backward_dq_tc_kernel");
      return;
    }
  }
  allow_shared_bytes(backward_dkdv_simt_kernel<T>, plan.backward_dkdv_shared_bytes);
  backward_dkdv_simt_kernel<T><<<kv_blocks, kThreads, dkdv_shared, compute_stream()>>>(
      qp, kp, vp, gp, lp, D, dkp, dvp, d, add);
  check_launch("attention backward_dkdv_simt_kernel");
  allow_shared_bytes(backward_dq_simt_kernel<T>, plan.backward_dq_shared_bytes);
  backward_dq_simt_kernel<T><<<q_blocks, kThreads, dq_shared, compute_stream()>>>(
      qp, kp, vp, gp, lp, D, dqp, d, add);
  check_launch("attention backward_dq_simt_kernel");
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                       AttentionMask mask, Tensor& out, Tensor& lse, Tensor& workspace) {
  const char* op = "attention_forward";
  const Dims d = kernel_dims(check_attention_forward(q, k, v, mask, out, lse, kFloatDTypes),
                             q.dtype(), scale, mask, op);
  check_devices({{&k, "k"}, {&v, "v"}, {&out, "out"}, {&lse, "lse"}}, q, op);
  workspace_floats(workspace, attention_forward_workspace_bytes(d.B, d.T, d.Hq, d.Hkv, d.hd), q,
                   op);
  const AttentionPlan plan = attention_plan(q.dtype(), d.hd);
  if (d.B == 0 || d.T == 0 || d.Hq == 0) return;

  DeviceGuard guard(q.device().index);
  if (q.dtype() == DType::BF16) {
    forward_launch<bf16>(d, plan, q, k, v, out, lse);
  } else {
    forward_launch<float>(d, plan, q, k, v, out, lse);
  }
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, float scale, AttentionMask mask,
                        Tensor& dq, Tensor& dk, Tensor& dv, Accumulate accumulate,
                        Tensor& workspace) {
  const char* op = "attention_backward";
  const Dims d = kernel_dims(
      check_attention_backward(dout, q, k, v, out, lse, mask, dq, dk, dv, kFloatDTypes),
      q.dtype(), scale, mask, op);
  check_devices({{&dout, "dout"}, {&k, "k"}, {&v, "v"}, {&out, "out"}, {&lse, "lse"},
                 {&dq, "dq"}, {&dk, "dk"}, {&dv, "dv"}},
                q, op);
  float* D = workspace_floats(
      workspace, attention_backward_workspace_bytes(d.B, d.T, d.Hq, d.Hkv, d.hd), q, op);
  const AttentionPlan plan = attention_plan(q.dtype(), d.hd);
  if (d.B == 0) return;
  const bool add = accumulate == Accumulate::Yes;
  if (d.T == 0) {
    // No query: dk and dv are empty sums (zero, or unchanged when accumulating).
    if (!add && dk.bytes() > 0) {
      DeviceGuard guard(q.device().index);
      CUDA_CHECK(cudaMemsetAsync(dk.raw_mutable_data(), 0, size_t(dk.bytes()), compute_stream()));
      CUDA_CHECK(cudaMemsetAsync(dv.raw_mutable_data(), 0, size_t(dv.bytes()), compute_stream()));
    }
    return;
  }

  DeviceGuard guard(q.device().index);
  if (q.dtype() == DType::BF16) {
    backward_launch<bf16>(d, plan, dout, q, k, v, out, lse, dq, dk, dv, add, D);
  } else {
    backward_launch<float>(d, plan, dout, q, k, v, out, lse, dq, dk, dv, add, D);
  }
}

void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_part, const Tensor& lse_part) {
  const char* op = "attention_merge";
  check_attention_merge(out, lse, out_part, lse_part, kFloatDTypes);
  const int64_t B = out.size(0), T = out.size(1), Hq = out.size(2), hd = out.size(3);
  check_devices({{&lse, "lse"}, {&out_part, "out_part"}, {&lse_part, "lse_part"}}, out, op);
  const int64_t rows = B * T * Hq;
  if (rows == 0) return;

  DeviceGuard guard(out.device().index);
  const unsigned blocks = grid_for(rows * 32, 256);
  float* lp = lse.mutable_data<float>();
  const float* lpp = lse_part.data<float>();
  if (out.dtype() == DType::BF16) {
    merge_kernel<bf16><<<blocks, 256, 0, compute_stream()>>>(
        static_cast<bf16*>(out.raw_mutable_data()), lp,
        static_cast<const bf16*>(out_part.raw_data()), lpp, B, T, Hq, hd);
  } else {
    merge_kernel<float><<<blocks, 256, 0, compute_stream()>>>(
        out.mutable_data<float>(), lp, out_part.data<float>(), lpp, B, T, Hq, hd);
  }
  check_launch("attention merge_kernel");
}

}  // namespace titan::ops::cuda

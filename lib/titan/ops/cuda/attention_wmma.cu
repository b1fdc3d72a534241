// Attention's tensor-core kernels (shared parts in ops/cuda/attention_kernels.cuh; picked by
// ops/cuda/attention.cu): bf16 with hd % 16 == 0 up to 128 (Llama's 64 and 128). 64 x 64
// tiles, four warps of 16 rows; every product (Q K^T, P V; in the backward dO V^T, dS K,
// P^T dO, dS^T Q) a WMMA bf16 16x16x16 with f32 accumulators. P and dS are rounded to bf16
// for their products; the softmax, its running max and sum, and every accumulator stay in
// f32 (shared memory).
#include <mma.h>

#include "titan/ops/cuda/attention_kernels.cuh"

namespace titan::ops::cuda::flash_attention {
namespace {

namespace wmma = nvcuda::wmma;

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
  const int64_t keys = key_end(d, i0, nq);
  for (int64_t j0 = 0; j0 < keys; j0 += kTcBlock) {
    const int nk = int(min(int64_t(kTcBlock), keys - j0));
    // Tiles the mask empties (other documents, a ring step's future), whole: the same
    // answer in every thread, so the barriers below stay paired.
    if (!tile_visible(d.mask, b, i0, nq, j0, nk)) continue;
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
        seen[c] = r < nq && j < nk && visible(d, b, i0 + r, j0 + j);
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
  // A block rather than a warp barrier: when the mask left no tile, m, l and os were last
  // written (initialized) by other warps' threads.
  __syncthreads();
  for (int rr = 0; rr < 16; ++rr) {
    const int r = r0 + rr;
    if (r >= nq) break;
    bf16* orow = out + q_index(d, b, i0 + r, h);
    if (m[r] == kNegInf) {  // no key at all: the empty partial, out 0 and lse -inf
      for (int e = lane; e < H; e += 32) orow[e] = __float2bfloat16(0.0f);
      if (lane == 0) lse[row_index(d, b, h, i0 + r)] = kNegInf;
      continue;
    }
    const float inv = 1.0f / l[r];
    for (int e = lane; e < H; e += 32) orow[e] = __float2bfloat16(os[r * f_ld + e] * inv);
    if (lane == 0) lse[row_index(d, b, h, i0 + r)] = m[r] + logf(l[r]);
  }
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
    for (int64_t i0 = query_begin(d, j0); i0 < d.T; i0 += kTcBlock) {
      const int nq = int(min(int64_t(kTcBlock), d.T - i0));
      if (!tile_visible(d.mask, b, i0, nq, j0, nk)) continue;  // uniform across the block
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
          // p = 0 where masked, and in rows that saw no key (lse = -inf)
          if (jj < nk && ii < nq && visible(d, b, i0 + ii, j0 + jj) && lse_s[ii] != kNegInf) {
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
  const int64_t keys = key_end(d, i0, nq);
  for (int64_t j0 = 0; j0 < keys; j0 += kTcBlock) {
    const int nk = int(min(int64_t(kTcBlock), keys - j0));
    if (!tile_visible(d.mask, b, i0, nq, j0, nk)) continue;  // uniform across the block
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
        if (ii < nq && jj < nk && visible(d, b, i0 + ii, j0 + jj) && lse_s[ii] != kNegInf) {
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

}  // namespace

void forward_wmma(const Dims& d, const AttentionPlan& plan, const bf16* q, const bf16* k,
                  const bf16* v, bf16* out, float* lse) {
  const unsigned blocks = unsigned(d.B * d.Hq * ceil_div(d.T, plan.block_q));
  const size_t shared = size_t(plan.forward_shared_bytes);
  allow_shared_bytes(forward_tc_kernel, plan.forward_shared_bytes);
  forward_tc_kernel<<<blocks, kThreads, shared, compute_stream()>>>(q, k, v, out, lse, d);
  check_launch("attention forward_tc_kernel");
}

void backward_wmma(const Dims& d, const AttentionPlan& plan, const bf16* q, const bf16* k,
                   const bf16* v, const bf16* dout, const float* lse, const float* D, bf16* dq,
                   bf16* dk, bf16* dv, bool add) {
  const unsigned kv_blocks = unsigned(d.B * d.Hkv * ceil_div(d.Tk, kTcBlock));
  const unsigned q_blocks = unsigned(d.B * d.Hq * ceil_div(d.T, kTcBlock));
  const size_t dkdv_shared = size_t(plan.backward_dkdv_shared_bytes);
  const size_t dq_shared = size_t(plan.backward_dq_shared_bytes);
  allow_shared_bytes(backward_dkdv_tc_kernel, plan.backward_dkdv_shared_bytes);
  backward_dkdv_tc_kernel<<<kv_blocks, kThreads, dkdv_shared, compute_stream()>>>(
      q, k, v, dout, lse, D, dk, dv, d, add);
  check_launch("attention backward_dkdv_tc_kernel");
  allow_shared_bytes(backward_dq_tc_kernel, plan.backward_dq_shared_bytes);
  backward_dq_tc_kernel<<<q_blocks, kThreads, dq_shared, compute_stream()>>>(
      q, k, v, dout, lse, D, dq, d, add);
  check_launch("attention backward_dq_tc_kernel");
}

}  // namespace titan::ops::cuda::flash_attention

// Attention's SIMT kernels (shared parts in ops/cuda/attention_kernels.cuh; picked by
// ops/cuda/attention.cu): f32, and bf16 with a head dim the tensor cores do not take, up to
// 256. Plain f32 loops over shared-memory tiles: the forward on 16-query tiles (a warp per
// query row, a lane per key), the backward on 16 x 16 tiles (a thread per score or per
// output element).
#include "titan/ops/cuda/attention_kernels.cuh"

namespace titan::ops::cuda::flash_attention {
namespace {

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
  const int64_t keys = key_end(d, i0, nq);
  for (int64_t j0 = 0; j0 < keys; j0 += kSimtBlockK) {
    const int nk = int(min(int64_t(kSimtBlockK), keys - j0));
    // Tiles the mask empties (other documents, a ring step's future), whole: the same
    // answer in every thread, so the barriers below stay paired.
    if (!tile_visible(d.mask, b, i0, nq, j0, nk)) continue;
    __syncthreads();  // the last tile's reads of ks, vs, ps are done; initial writes visible
    load_tile(k + kv_index(d, b, j0, g), d.Hkv * d.hd, kSimtBlockK, nk, H, ks, k_ld);
    load_tile(v + kv_index(d, b, j0, g), d.Hkv * d.hd, kSimtBlockK, nk, H, vs, H);
    __syncthreads();
    // Scores and the online softmax: a warp per query row, a lane per key.
    for (int r = warp; r < kSimtBlockQ; r += kWarps) {
      const int j = lane;
      const bool seen = r < nq && j < nk && visible(d, b, i0 + r, j0 + j);
      float s = kNegInf;
      if (seen) {
        float dot = 0.0f;
        for (int e = 0; e < H; ++e) dot += qs[r * H + e] * ks[j * k_ld + e];
        s = d.scale * dot;
      }
      const float m_old = m[r];
      const float m_new = fmaxf(m_old, warp_max(s));
      const float p = seen ? expf(s - m_new) : 0.0f;  // seen: m_new is finite
      // m_new = -inf for rows that saw no key yet (or none at all, past T): leave them
      // empty.
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
  __syncthreads();  // also orders the initial writes before these reads when no tile ran
  // A row that saw no key (m = -inf, l = 0) is the empty partial: out 0, lse -inf.
  for (int x = tid; x < nq * H; x += kThreads) {
    const int r = x / H, e = x % H;
    out[q_index(d, b, i0 + r, h) + e] = from_float<T>(m[r] == kNegInf ? 0.0f : acc[x] / l[r]);
  }
  if (tid < nq) {
    lse[row_index(d, b, h, i0 + tid)] = m[tid] == kNegInf ? kNegInf : m[tid] + logf(l[tid]);
  }
}

// ---------------------------------------------------------------------------------------
// SIMT backward
// ---------------------------------------------------------------------------------------

// p[r][j] and ds[r][j] (without the scale) for a tile of nq queries x nk keys of batch row
// b; a thread per pair. q/dO tiles are indexed by r, k/v tiles by j; all with leading
// dimension ld. p = 0 where masked, and in rows that saw no key (lse = -inf).
__device__ void simt_probabilities(const Dims& d, const float* qs, const float* dos,
                                   const float* ks, const float* vs, int ld, const float* lse_s,
                                   const float* D_s, int64_t b, int64_t i0, int nq, int64_t j0,
                                   int nk, float* ps, float* dss) {
  constexpr int n = kSimtBackwardBlock;
  const int H = int(d.hd);
  for (int x = threadIdx.x; x < n * n; x += blockDim.x) {
    const int r = x / n, j = x % n;
    float p = 0.0f, ds = 0.0f;
    if (r < nq && j < nk && visible(d, b, i0 + r, j0 + j) && lse_s[r] != kNegInf) {
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
    for (int64_t i0 = query_begin(d, j0); i0 < d.T; i0 += n) {
      const int nq = int(min(int64_t(n), d.T - i0));
      if (!tile_visible(d.mask, b, i0, nq, j0, nk)) continue;  // uniform across the block
      __syncthreads();  // the last step's reads of qs, dos, ps, dss are done
      load_tile(q + q_index(d, b, i0, h), d.Hq * d.hd, n, nq, H, t.qs, ld);
      load_tile(dout + q_index(d, b, i0, h), d.Hq * d.hd, n, nq, H, t.dos, ld);
      load_rows(lse + row_index(d, b, h, i0), nq, t.lse_s);
      load_rows(D + row_index(d, b, h, i0), nq, t.D_s);
      __syncthreads();
      simt_probabilities(d, t.qs, t.dos, t.ks, t.vs, ld, t.lse_s, t.D_s, b, i0, nq, j0, nk,
                         t.ps, t.dss);
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
  const int64_t keys = key_end(d, i0, nq);
  for (int64_t j0 = 0; j0 < keys; j0 += n) {
    const int nk = int(min(int64_t(n), keys - j0));
    if (!tile_visible(d.mask, b, i0, nq, j0, nk)) continue;  // uniform across the block
    __syncthreads();  // the last step's reads of ks, dss are done; initial writes visible
    load_tile(k + kv_index(d, b, j0, g), d.Hkv * d.hd, n, nk, H, t.ks, ld);
    load_tile(v + kv_index(d, b, j0, g), d.Hkv * d.hd, n, nk, H, t.vs, ld);
    __syncthreads();
    simt_probabilities(d, t.qs, t.dos, t.ks, t.vs, ld, t.lse_s, t.D_s, b, i0, nq, j0, nk, t.ps,
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

}  // namespace

template <class T>
void forward_simt(const Dims& d, const AttentionPlan& plan, const T* q, const T* k, const T* v,
                  T* out, float* lse) {
  const unsigned blocks = unsigned(d.B * d.Hq * ceil_div(d.T, plan.block_q));
  const size_t shared = size_t(plan.forward_shared_bytes);
  allow_shared_bytes(forward_simt_kernel<T>, plan.forward_shared_bytes);
  forward_simt_kernel<T><<<blocks, kThreads, shared, compute_stream()>>>(q, k, v, out, lse, d);
  check_launch("attention forward_simt_kernel");
}

template <class T>
void backward_simt(const Dims& d, const AttentionPlan& plan, const T* q, const T* k,
                   const T* v, const T* dout, const float* lse, const float* D, T* dq, T* dk,
                   T* dv, bool add) {
  const unsigned kv_blocks = unsigned(d.B * d.Hkv * ceil_div(d.Tk, kSimtBackwardBlock));
  const unsigned q_blocks = unsigned(d.B * d.Hq * ceil_div(d.T, kSimtBackwardBlock));
  const size_t dkdv_shared = size_t(plan.backward_dkdv_shared_bytes);
  const size_t dq_shared = size_t(plan.backward_dq_shared_bytes);
  allow_shared_bytes(backward_dkdv_simt_kernel<T>, plan.backward_dkdv_shared_bytes);
  backward_dkdv_simt_kernel<T><<<kv_blocks, kThreads, dkdv_shared, compute_stream()>>>(
      q, k, v, dout, lse, D, dk, dv, d, add);
  check_launch("attention backward_dkdv_simt_kernel");
  allow_shared_bytes(backward_dq_simt_kernel<T>, plan.backward_dq_shared_bytes);
  backward_dq_simt_kernel<T><<<q_blocks, kThreads, dq_shared, compute_stream()>>>(
      q, k, v, dout, lse, D, dq, d, add);
  check_launch("attention backward_dq_simt_kernel");
}

template void forward_simt<float>(const Dims&, const AttentionPlan&, const float*, const float*,
                                  const float*, float*, float*);
template void forward_simt<bf16>(const Dims&, const AttentionPlan&, const bf16*, const bf16*,
                                 const bf16*, bf16*, float*);
template void backward_simt<float>(const Dims&, const AttentionPlan&, const float*, const float*,
                                   const float*, const float*, const float*, const float*,
                                   float*, float*, float*, bool);
template void backward_simt<bf16>(const Dims&, const AttentionPlan&, const bf16*, const bf16*,
                                  const bf16*, const bf16*, const float*, const float*, bf16*,
                                  bf16*, bf16*, bool);

}  // namespace titan::ops::cuda::flash_attention

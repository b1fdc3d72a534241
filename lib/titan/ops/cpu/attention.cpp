// Attention on the CPU: FlashAttention-2 with 64 x 64 tiles, written to be read.
//
// Forward: one task per (b, h, query block of Bq rows). It walks the key blocks the mask
// leaves visible (up to the diagonal when causal; a document's own blocks with documents)
// keeping, per query row, the running max m, the running sum l of exp(s - m) and the
// unnormalized output acc = sum_j exp(s_j - m) v_j; when a new block raises the max, l and
// acc are rescaled by exp(m_old - m_new). At the end out = acc / l and lse = m + log(l)
// (out = 0, lse = -inf for a row that saw no key). No T x T matrix is ever formed; a
// task's memory is its tiles.
//
// Backward: one task per (b, kv head). The task owns dk and dv of that kv head and dq of
// the Hq / Hkv query heads that read it, so every output element is written by one
// thread in one fixed order: no atomics, no reduction across threads, results that do not
// depend on the thread count. Per key block it keeps dk and dv tiles and sweeps the
// visible query blocks of every query head of the group.
//
// Which keys a row sees (causal by position, documents) is ops/attention_mask.h's, written
// for device code too: a contiguous range [lo, hi) per row and key block, and whole tiles
// skipped.
//
// The tile products are register-blocked and written with GCC vector types at the width
// the build targets; the softmax loops are plain loops that GCC -O3 vectorizes (with an
// exp of our own, as libm's is a call). No BLAS: its own threads would fight OpenMP's,
// and 64 x 64 tiles are too small for it anyway. Sums within a tile are in float; the
// tests compare against float64.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "titan/core/threads.h"
#include "titan/ops/attention.h"
#include "titan/ops/attention_mask.h"
#include "titan/ops/cpu/vector_math.h"

namespace titan::ops {
namespace {

// Score elements computed, per process (attention_work()); one add per task.
std::atomic<int64_t> forward_scores_done{0};
std::atomic<int64_t> backward_scores_done{0};

}  // namespace

AttentionWork attention_work() {
  return {forward_scores_done.load(std::memory_order_relaxed),
          backward_scores_done.load(std::memory_order_relaxed)};
}

void reset_attention_work() {
  forward_scores_done.store(0, std::memory_order_relaxed);
  backward_scores_done.store(0, std::memory_order_relaxed);
}

namespace cpu {
namespace {

constexpr int64_t kBlock = 64;  // Bq = Bk: a 64 x 64 f32 score tile is 16 KiB, L1-sized

// Tiles start on 64-byte boundaries so that no two threads share a cache line.
int64_t padded(int64_t floats) { return (floats + 15) / 16 * 16; }

int64_t forward_tile_floats(int64_t hd) {
  // transposed key block, scores, output accumulator, running max and sum
  return padded(hd * kBlock) + padded(kBlock * kBlock) + padded(kBlock * hd) + 2 * padded(kBlock);
}

int64_t backward_tile_floats(int64_t hd) {
  // transposed key and value blocks, p and ds tiles, dk and dv accumulators
  return 2 * padded(hd * kBlock) + 2 * padded(kBlock * kBlock) + 2 * padded(kBlock * hd);
}

// x[j] = exp(x[j] - shift) for j < n; returns their sum. Eight running partial sums in a
// fixed order: vectorizable, and the same bits at any vector width.
float exp_shifted_sum(float* __restrict x, int64_t n, float shift) {
  float lanes[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int c = 0; c < 8; ++c) {
      const float e = exp_bounded(x[j + c] - shift);
      x[j + c] = e;
      lanes[c] += e;
    }
  }
  float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
              ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; j < n; ++j) {
    x[j] = exp_bounded(x[j] - shift);
    sum += x[j];
  }
  return sum;
}

// One SIMD register of floats, as wide as the build targets (4 on the x86-64 baseline,
// 8 with AVX, 16 with AVX-512). GCC keeps these in registers, which it does not reliably
// do for a register block written as plain loops. Lane-wise arithmetic only: an element's
// value does not depend on the width.
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#elif defined(__AVX__)
constexpr int64_t kLanes = 8;
#else
constexpr int64_t kLanes = 4;
#endif
// aligned(4): rows need not start on a vector boundary; may_alias: it reads float arrays.
typedef float FloatVector
    __attribute__((vector_size(kLanes * sizeof(float)), aligned(4), __may_alias__));

// c[M, N] = (or +=) op(a)[M, K] * b[K, N]. Rows of b and c are contiguous with leading
// dimensions ldb, ldc; op(a)[i, k] is a[i * lda + k], or a[k * lda + i] when kTransposeA.
// A block of 4 rows x 2 vectors of c stays in registers while k runs (8 registers of 16);
// edges take the plain loop. Both paths sum over k in order from zero and then add to c,
// so an element's value does not depend on which path computed it.
template <bool kTransposeA, bool kAdd>
void tile_product(int64_t M, int64_t N, int64_t K, const float* __restrict a, int64_t lda,
                  const float* __restrict b, int64_t ldb, float* __restrict c, int64_t ldc) {
  constexpr int64_t kRows = 4, kVectors = 2, kCols = kVectors * kLanes;
  auto a_at = [&](int64_t i, int64_t k) { return kTransposeA ? a[k * lda + i] : a[i * lda + k]; };
  auto edge = [&](int64_t i0, int64_t i1, int64_t j0) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = j0; j < N; ++j) {
        float sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += a_at(i, k) * b[k * ldb + j];
        float* dst = c + i * ldc + j;
        *dst = kAdd ? *dst + sum : sum;
      }
    }
  };
  int64_t i = 0;
  for (; i + kRows <= M; i += kRows) {
    int64_t j = 0;
    for (; j + kCols <= N; j += kCols) {
      FloatVector acc[kRows][kVectors] = {};
      for (int64_t k = 0; k < K; ++k) {
        FloatVector brow[kVectors];
#pragma GCC unroll 4  // unrolled fully, so that acc and brow live in registers
        for (int64_t v = 0; v < kVectors; ++v) {
          brow[v] = *reinterpret_cast<const FloatVector*>(b + k * ldb + j + v * kLanes);
        }
#pragma GCC unroll 8
        for (int64_t r = 0; r < kRows; ++r) {
          const float ar = a_at(i + r, k);
#pragma GCC unroll 4
          for (int64_t v = 0; v < kVectors; ++v) acc[r][v] += ar * brow[v];
        }
      }
#pragma GCC unroll 8
      for (int64_t r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
        for (int64_t v = 0; v < kVectors; ++v) {
          FloatVector* dst = reinterpret_cast<FloatVector*>(c + (i + r) * ldc + j + v * kLanes);
          *dst = kAdd ? *dst + acc[r][v] : acc[r][v];
        }
      }
    }
    edge(i, i + kRows, j);
  }
  edge(i, M, 0);
}

// dst[d * kBlock + j] = src[j * ld + d]: a key or value block turned so that the score
// products read contiguous rows of it.
void transpose_block(const float* __restrict src, int64_t rows, int64_t hd, int64_t ld,
                     float* __restrict dst) {
  for (int64_t j = 0; j < rows; ++j) {
    for (int64_t d = 0; d < hd; ++d) dst[d * kBlock + j] = src[j * ld + d];
  }
}

// The checked dims, with the strides the kernels walk.
struct Dims : AttentionDims {
  int64_t group() const { return Hq / Hkv; }
  int64_t q_row() const { return Hq * hd; }    // floats between time steps of q, out, dq
  int64_t kv_row() const { return Hkv * hd; }  // ... of k, v, dk, dv
};

// The CPU's own check, after the shared ones: the inputs are on the CPU.
void check_on_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  for (const Tensor* t : {&q, &k, &v}) {
    TITAN_CHECK(t->device().is_cpu()) << op << ": all tensors must be on the cpu";
  }
}

// rows x n values that must increase along n (strictly, or never decrease): the orders
// the tile skipping relies on. A wrong order would silently drop keys; checking is one pass
// over integers.
void check_order(const int32_t* x, int64_t rows, int64_t n, bool strict, const char* op,
                 const char* name) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 1; t < n; ++t) {
      const int32_t before = x[r * n + t - 1], at = x[r * n + t];
      TITAN_CHECK(strict ? at > before : at >= before)
          << op << ": " << name << (strict ? " must increase strictly" : " must not decrease")
          << " along t, got " << at << " after " << before << " at t " << t;
    }
  }
}

// The mask of a call: causal or not, and the positions and documents, if any, with their
// orders checked.
AttentionMaskView mask_view(AttentionMask mask, const AttentionPositions* positions,
                            const AttentionDims& d, const char* op) {
  const AttentionMaskView view = attention_mask_view(mask, positions, d.T, d.Tk);
  if (view.q_pos) {
    check_order(view.q_pos, 1, d.T, true, op, "q_position");
    check_order(view.k_pos, 1, d.Tk, true, op, "k_position");
  }
  if (view.q_doc) {
    check_order(view.q_doc, d.B, d.T, false, op, "q_document");
    check_order(view.k_doc, d.B, d.Tk, false, op, "k_document");
  }
  return view;
}

float* workspace_floats(Tensor& workspace, int64_t needed_bytes, const char* op) {
  TITAN_CHECK(workspace.defined()) << op << ": workspace is undefined";
  TITAN_CHECK(workspace.device().is_cpu()) << op << ": workspace must be on the cpu";
  TITAN_CHECK(workspace.bytes() >= needed_bytes)
      << op << ": workspace has " << workspace.bytes() << " bytes, needs " << needed_bytes
      << " (size it with the thread count in force at the call, " << omp_get_max_threads() << ")";
  void* p = workspace.raw_mutable_data();
  TITAN_CHECK(reinterpret_cast<uintptr_t>(p) % alignof(float) == 0)
      << op << ": workspace is not float-aligned";
  return static_cast<float*>(p);
}

}  // namespace

int64_t attention_forward_workspace_bytes(int64_t /*B*/, int64_t /*T*/, int64_t /*Hq*/,
                                          int64_t /*Hkv*/, int64_t hd, int threads) {
  return int64_t(std::max(threads, 1)) * forward_tile_floats(hd) * int64_t(sizeof(float));
}

int64_t attention_backward_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t /*Hkv*/,
                                           int64_t hd, int threads) {
  return (padded(B * Hq * T) + int64_t(std::max(threads, 1)) * backward_tile_floats(hd)) *
         int64_t(sizeof(float));
}

// ---------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                       AttentionMask mask, Tensor& out, Tensor& lse, Tensor& workspace,
                       const AttentionPositions* positions) {
  const char* op = "attention_forward";
  const Dims d{check_attention_forward(q, k, v, mask, out, lse, kFloatDTypes, positions)};
  check_on_cpu(q, k, v, op);
  const AttentionMaskView view = mask_view(mask, positions, d, op);
  const int threads = omp_get_max_threads();
  float* ws = workspace_floats(
      workspace, attention_forward_workspace_bytes(d.B, d.T, d.Hq, d.Hkv, d.hd, threads), op);

  const int64_t hd = d.hd, q_row = d.q_row(), kv_row = d.kv_row();
  const int64_t query_blocks = (d.T + kBlock - 1) / kBlock;
  const int64_t tasks = d.B * d.Hq * query_blocks;
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  float* op_out = out.mutable_data<float>();
  float* lp = lse.mutable_data<float>();

#pragma omp parallel num_threads(threads)
  {
    float* kt = ws + int64_t(omp_get_thread_num()) * forward_tile_floats(hd);
    float* s = kt + padded(hd * kBlock);
    float* acc = s + padded(kBlock * kBlock);
    float* m = acc + padded(kBlock * hd);
    float* l = m + padded(kBlock);
    // Dynamic: masked tasks differ in length (a causal query block sees qb + 1 key blocks),
    // the longest going first. Which thread runs a task does not change its result.
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t qb = query_blocks - 1 - task % query_blocks;
      const int64_t h = (task / query_blocks) % d.Hq, b = task / (query_blocks * d.Hq);
      const int64_t i0 = qb * kBlock, nq = std::min(kBlock, d.T - i0);
      const int64_t g = h / d.group();
      const float* qblock = qp + ((b * d.T + i0) * d.Hq + h) * hd;
      const float* kbase = kp + (b * d.Tk * d.Hkv + g) * hd;
      const float* vbase = vp + (b * d.Tk * d.Hkv + g) * hd;
      std::fill(m, m + nq, -std::numeric_limits<float>::infinity());
      std::fill(l, l + nq, 0.0f);
      std::fill(acc, acc + nq * hd, 0.0f);
      int64_t scores = 0;
      for (int64_t j0 = 0; j0 < d.Tk; j0 += kBlock) {
        const int64_t nk = std::min(kBlock, d.Tk - j0);
        // Causal: blocks after the diagonal (after the last query's position); documents:
        // blocks of other documents. Skipped whole.
        if (!tile_visible(view, b, i0, nq, j0, nk)) continue;
        scores += nq * nk;
        transpose_block(kbase + j0 * kv_row, nk, hd, kv_row, kt);
        tile_product<false, false>(nq, nk, hd, qblock, q_row, kt, kBlock, s, kBlock);
        for (int64_t r = 0; r < nq; ++r) {
          float* sr = s + r * kBlock;
          int64_t lo, hi;
          visible_keys(view, b, i0 + r, j0, nk, &lo, &hi);
          float new_max = m[r];
#pragma omp simd reduction(max : new_max)
          for (int64_t j = lo; j < hi; ++j) {
            sr[j] *= scale;
            new_max = std::max(new_max, sr[j]);
          }
          std::fill(sr, sr + lo, 0.0f);  // masked: p = 0
          std::fill(sr + hi, sr + nk, 0.0f);
          if (hi == lo) continue;
          // exp(-inf) = 0 on the first block: the empty accumulator is simply replaced.
          const float rescale = exp_bounded(m[r] - new_max);
          l[r] = l[r] * rescale + exp_shifted_sum(sr + lo, hi - lo, new_max);
          m[r] = new_max;
          float* ar = acc + r * hd;
          for (int64_t e = 0; e < hd; ++e) ar[e] *= rescale;
        }
        tile_product<false, true>(nq, hd, nk, s, kBlock, vbase + j0 * kv_row, kv_row, acc, hd);
      }
      for (int64_t r = 0; r < nq; ++r) {
        float* orow = op_out + ((b * d.T + i0 + r) * d.Hq + h) * hd;
        float& lse_r = lp[(b * d.Hq + h) * d.T + i0 + r];
        if (m[r] == -std::numeric_limits<float>::infinity()) {
          // No key at all (a ring step against the future, say): the empty partial.
          std::fill(orow, orow + hd, 0.0f);
          lse_r = m[r];
          continue;
        }
        const float inv = 1.0f / l[r];
        for (int64_t e = 0; e < hd; ++e) orow[e] = acc[r * hd + e] * inv;
        lse_r = m[r] + std::log(l[r]);
      }
      forward_scores_done.fetch_add(scores, std::memory_order_relaxed);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, float scale, AttentionMask mask,
                        Tensor& dq, Tensor& dk, Tensor& dv, Accumulate accumulate,
                        Tensor& workspace, const AttentionPositions* positions) {
  const char* op = "attention_backward";
  const Dims d{check_attention_backward(dout, q, k, v, out, lse, mask, dq, dk, dv, kFloatDTypes,
                                        positions)};
  check_on_cpu(q, k, v, op);
  const AttentionMaskView view = mask_view(mask, positions, d, op);
  const int threads = omp_get_max_threads();
  float* ws = workspace_floats(
      workspace, attention_backward_workspace_bytes(d.B, d.T, d.Hq, d.Hkv, d.hd, threads), op);

  const int64_t hd = d.hd, q_row = d.q_row(), kv_row = d.kv_row(), group = d.group();
  const bool add = accumulate == Accumulate::Yes;
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  const float* gp = dout.data<float>();
  const float* yp = out.data<float>();
  const float* lp = lse.data<float>();
  float* dqp = dq.mutable_data<float>();
  float* dkp = dk.mutable_data<float>();
  float* dvp = dv.mutable_data<float>();

  // D[b, h, i] = dout . out, the softmax backward's row term, laid out like lse.
  float* D = ws;
  const int64_t rows = d.B * d.T * d.Hq;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t h = row % d.Hq, i = (row / d.Hq) % d.T, b = row / (d.Hq * d.T);
    double sum = 0;
    for (int64_t e = 0; e < hd; ++e) sum += double(gp[row * hd + e]) * yp[row * hd + e];
    D[(b * d.Hq + h) * d.T + i] = float(sum);
  }

  float* tiles = ws + padded(d.B * d.Hq * d.T);
  const int64_t tasks = d.B * d.Hkv;
#pragma omp parallel num_threads(threads)
  {
    float* kt = tiles + int64_t(omp_get_thread_num()) * backward_tile_floats(hd);
    float* vt = kt + padded(hd * kBlock);
    float* p = vt + padded(hd * kBlock);
    float* ds = p + padded(kBlock * kBlock);
    float* dk_acc = ds + padded(kBlock * kBlock);
    float* dv_acc = dk_acc + padded(kBlock * hd);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / d.Hkv, g = task % d.Hkv;
      const int64_t h_first = g * group;
      // dq of this group's heads is summed over key blocks right in place.
      if (!add) {
        for (int64_t i = 0; i < d.T; ++i) {
          float* row = dqp + ((b * d.T + i) * d.Hq + h_first) * hd;
          std::fill(row, row + group * hd, 0.0f);
        }
      }
      int64_t scores = 0;
      for (int64_t j0 = 0; j0 < d.Tk; j0 += kBlock) {
        const int64_t nk = std::min(kBlock, d.Tk - j0);
        const int64_t kv_offset = ((b * d.Tk + j0) * d.Hkv + g) * hd;
        bool transposed = false;  // not before a visible tile: a key block may have none
        std::fill(dk_acc, dk_acc + nk * hd, 0.0f);
        std::fill(dv_acc, dv_acc + nk * hd, 0.0f);
        for (int64_t h = h_first; h < h_first + group; ++h) {
          const float* lse_row = lp + (b * d.Hq + h) * d.T;
          const float* D_row = D + (b * d.Hq + h) * d.T;
          for (int64_t i0 = 0; i0 < d.T; i0 += kBlock) {
            const int64_t nq = std::min(kBlock, d.T - i0);
            // Causal: query blocks before this key block; documents: other documents' blocks.
            if (!tile_visible(view, b, i0, nq, j0, nk)) continue;
            scores += nq * nk;
            if (!transposed) {
              transpose_block(kp + kv_offset, nk, hd, kv_row, kt);
              transpose_block(vp + kv_offset, nk, hd, kv_row, vt);
              transposed = true;
            }
            const int64_t q_offset = ((b * d.T + i0) * d.Hq + h) * hd;
            const float* qblock = qp + q_offset;
            const float* gblock = gp + q_offset;
            // p = exp(scale * q k^T - lse): the forward's probabilities, recomputed.
            tile_product<false, false>(nq, nk, hd, qblock, q_row, kt, kBlock, p, kBlock);
            for (int64_t r = 0; r < nq; ++r) {
              float* pr = p + r * kBlock;
              int64_t lo, hi;
              visible_keys(view, b, i0 + r, j0, nk, &lo, &hi);
              const float shift = lse_row[i0 + r];
              // A row that saw no key in the forward (lse = -inf) has p = 0 everywhere.
              if (shift == -std::numeric_limits<float>::infinity()) hi = lo;
              std::fill(pr, pr + lo, 0.0f);
              for (int64_t j = lo; j < hi; ++j) pr[j] = exp_bounded(pr[j] * scale - shift);
              std::fill(pr + hi, pr + nk, 0.0f);
            }
            // dv += p^T dout
            tile_product<true, true>(nk, hd, nq, p, kBlock, gblock, q_row, dv_acc, hd);
            // dp = dout v^T, then ds = scale * p * (dp - D), in place
            tile_product<false, false>(nq, nk, hd, gblock, q_row, vt, kBlock, ds, kBlock);
            for (int64_t r = 0; r < nq; ++r) {
              const float* __restrict pr = p + r * kBlock;
              float* __restrict dsr = ds + r * kBlock;
              const float Dr = D_row[i0 + r];
              for (int64_t j = 0; j < nk; ++j) dsr[j] = scale * pr[j] * (dsr[j] - Dr);
            }
            // dq += ds k,  dk += ds^T q
            tile_product<false, true>(nq, hd, nk, ds, kBlock, kp + kv_offset, kv_row,
                                      dqp + q_offset, q_row);
            tile_product<true, true>(nk, hd, nq, ds, kBlock, qblock, q_row, dk_acc, hd);
          }
        }
        for (int64_t j = 0; j < nk; ++j) {
          float* dk_row = dkp + kv_offset + j * kv_row;
          float* dv_row = dvp + kv_offset + j * kv_row;
          for (int64_t e = 0; e < hd; ++e) {
            dk_row[e] = add ? dk_row[e] + dk_acc[j * hd + e] : dk_acc[j * hd + e];
            dv_row[e] = add ? dv_row[e] + dv_acc[j * hd + e] : dv_acc[j * hd + e];
          }
        }
      }
      backward_scores_done.fetch_add(scores, std::memory_order_relaxed);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Merge of two partial results over disjoint key sets (ring attention)
// ---------------------------------------------------------------------------------------

void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_part, const Tensor& lse_part) {
  check_attention_merge(out, lse, out_part, lse_part, kFloatDTypes);
  const int64_t B = out.size(0), T = out.size(1), Hq = out.size(2), hd = out.size(3);
  float* op_out = out.mutable_data<float>();
  float* lp = lse.mutable_data<float>();
  const float* pp = out_part.data<float>();
  const float* lpp = lse_part.data<float>();
  const int64_t rows = B * T * Hq;
#pragma omp parallel for schedule(static) if (worth_threads(rows * hd))
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t h = row % Hq, i = (row / Hq) % T, b = row / (Hq * T);
    float& l = lp[(b * Hq + h) * T + i];
    const float l_part = lpp[(b * Hq + h) * T + i];
    const float hi = std::max(l, l_part), lo = std::min(l, l_part);
    if (hi == -std::numeric_limits<float>::infinity()) continue;  // both saw no key
    const float merged = hi + std::log1p(std::exp(lo - hi));
    const float w = std::exp(l - merged), w_part = std::exp(l_part - merged);
    float* orow = op_out + row * hd;
    const float* prow = pp + row * hd;
    for (int64_t e = 0; e < hd; ++e) orow[e] = w * orow[e] + w_part * prow[e];
    l = merged;
  }
}

}  // namespace cpu
}  // namespace titan::ops

// Attention on the CPU: FlashAttention-2 with 64 x 64 tiles, written to be read.
//
// Forward: one task per (b, h, query block of Bq rows). It walks the key blocks the mask
// leaves visible (up to the diagonal when causal; a document's own blocks with documents)
// keeping, per query row, the running max m, the running sum l of exp(s - m) and the
// unnormalized output acc = sum_j exp(s_j - m) v_j; when a new block raises the max, l and
// acc are rescaled by exp(m_old - m_new). At the end out = acc / l and lse = m + log(l)
// (out = 0, lse = -inf for a row that saw no key). The scores are computed transposed
// (key by query, against the query block turned once per task), so the softmax runs with
// the queries in the vector lanes. No T x T matrix is ever formed; a task's memory is its
// tiles.
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
// The tile kernels (ops/cpu/attention_tiles.inc) are register-blocked and written with GCC
// vector types at the width of the target they are compiled for, once for the build's and
// once for AVX-512, chosen at run time (ops/cpu/kernel_isa.h); the softmax loops are plain
// loops that GCC -O3 vectorizes (with an exp of our own, as libm's is a call), but for the
// forward's running max, written with the same vector types. No BLAS: its
// own threads would fight OpenMP's, and 64 x 64 tiles are too small for it anyway. Sums
// within a tile are in float; the tests compare against float64. bf16 tensors run on f32
// copies (ops/cpu/bf16_storage.h); lse stays f32.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "titan/core/threads.h"
#include "titan/ops/attention.h"
#include "titan/ops/attention_mask.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/cpu/kernel_isa.h"
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
  // transposed query block, scores, output accumulator, running max and sum
  return padded(hd * kBlock) + padded(kBlock * kBlock) + padded(kBlock * hd) + 2 * padded(kBlock);
}

int64_t backward_tile_floats(int64_t hd) {
  // transposed key and value blocks, p and ds tiles, dk and dv accumulators
  return 2 * padded(hd * kBlock) + 2 * padded(kBlock * kBlock) + 2 * padded(kBlock * hd);
}

// The checked dims, with the strides the kernels walk.
struct Dims : AttentionDims {
  int64_t group() const { return Hq / Hkv; }
  int64_t q_row() const { return Hq * hd; }    // floats between time steps of q, out, dq
  int64_t kv_row() const { return Hkv * hd; }  // ... of k, v, dk, dv
};

// What the tile kernels of one call take (checked, with the workspace in hand).
struct ForwardTiles {
  Dims d;
  AttentionMaskView view;
  float scale;
  int threads;
  const float *q, *k, *v;
  float *out, *lse;
  float* ws;  // threads x forward_tile_floats
};
struct BackwardTiles {
  Dims d;
  AttentionMaskView view;
  float scale;
  bool add;
  int threads;
  const float *q, *k, *v, *dout, *lse;
  const float* D;  // dout . out per row, laid out like lse
  float *dq, *dk, *dv;
  float* tiles;  // threads x backward_tile_floats
};

// The kernels, once for the build's target and once for AVX-512 (ops/cpu/kernel_isa.h).
namespace built {
#if defined(__AVX512F__)
constexpr int64_t kTileLanes = 16;
#elif defined(__AVX__)
constexpr int64_t kTileLanes = 8;
#else
constexpr int64_t kTileLanes = 4;
#endif
#include "titan/ops/cpu/attention_tiles.inc"
}  // namespace built
#if TITAN_AVX512_KERNELS
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
namespace avx512 {
constexpr int64_t kTileLanes = 16;
#include "titan/ops/cpu/attention_tiles.inc"
}  // namespace avx512
#pragma GCC pop_options
#endif

template <class Tiles>
void run_on_kernel_isa(const Tiles& tiles) {
#if TITAN_AVX512_KERNELS
  if (kernel_isa() == KernelIsa::Avx512) {
    if constexpr (std::is_same_v<Tiles, ForwardTiles>) return avx512::forward_tiles(tiles);
    if constexpr (std::is_same_v<Tiles, BackwardTiles>) return avx512::backward_tiles(tiles);
  }
#endif
  if constexpr (std::is_same_v<Tiles, ForwardTiles>) return built::forward_tiles(tiles);
  if constexpr (std::is_same_v<Tiles, BackwardTiles>) return built::backward_tiles(tiles);
}

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
  if (any_bf16({&q, &k, &v, &out})) {
    F32Output out32(out, false);
    cpu::attention_forward(*F32Input(q), *F32Input(k), *F32Input(v), scale, mask, *out32, lse,
                           workspace, positions);
    return out32.store();
  }
  const AttentionMaskView view = mask_view(mask, positions, d, op);
  const int threads = omp_get_max_threads();
  float* ws = workspace_floats(
      workspace, attention_forward_workspace_bytes(d.B, d.T, d.Hq, d.Hkv, d.hd, threads), op);

  const ForwardTiles tiles{d,
                           view,
                           scale,
                           threads,
                           q.data<float>(),
                           k.data<float>(),
                           v.data<float>(),
                           out.mutable_data<float>(),
                           lse.mutable_data<float>(),
                           ws};
  run_on_kernel_isa(tiles);
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
  if (any_bf16({&dout, &q, &k, &v, &out, &dq, &dk, &dv})) {
    const bool add = accumulate == Accumulate::Yes;
    F32Output dq32(dq, add), dk32(dk, add), dv32(dv, add);
    cpu::attention_backward(*F32Input(dout), *F32Input(q), *F32Input(k), *F32Input(v),
                            *F32Input(out), lse, scale, mask, *dq32, *dk32, *dv32, accumulate,
                            workspace, positions);
    dq32.store();
    dk32.store();
    return dv32.store();
  }
  const AttentionMaskView view = mask_view(mask, positions, d, op);
  const int threads = omp_get_max_threads();
  float* ws = workspace_floats(
      workspace, attention_backward_workspace_bytes(d.B, d.T, d.Hq, d.Hkv, d.hd, threads), op);

  const int64_t hd = d.hd;
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

  const BackwardTiles tiles{d,  view, scale, add, threads, qp,  kp, vp, gp,
                            lp, D,    dqp,   dkp, dvp,     ws + padded(rows)};
  run_on_kernel_isa(tiles);
}

// ---------------------------------------------------------------------------------------
// Merge of two partial results over disjoint key sets (ring attention)
// ---------------------------------------------------------------------------------------

void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_part, const Tensor& lse_part) {
  check_attention_merge(out, lse, out_part, lse_part, kFloatDTypes);
  if (any_bf16({&out, &out_part})) {
    F32Output out32(out, true);
    cpu::attention_merge(*out32, lse, *F32Input(out_part), lse_part);
    return out32.store();
  }
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

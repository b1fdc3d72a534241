// Scaled dot-product attention with grouped-query heads (GQA), causal or full, computed
// block-wise with an online softmax (FlashAttention-2): memory linear in the sequence.
//
//   s[i, j]  = scale * q[b, i, h, :] . k[b, j, g(h), :]          g(h) = h / (Hq / Hkv)
//   p[i, :]  = softmax over the allowed keys j of s[i, :]      Causal: j <= i;  None: all j
//   out[b, i, h, :] = sum_j p[i, j] * v[b, j, g(h), :]
//   lse[b, h, i]    = log sum_j exp(s[i, j])                     (natural log, s scaled)
//
// Shapes (glossary letters: B batch, T time, Hq query heads, Hkv key/value heads, hd head
// dim; Tk the keys' time, equal to T when causal without AttentionPositions):
//   q, out, dout, dq   [B, T,  Hq,  hd]      the Llama layout after wq / wk / wv
//   k, v, dk, dv       [B, Tk, Hkv, hd]      Hq % Hkv == 0; Hq == Hkv is plain MHA
//   lse                [B, Hq, T]  f32       kept for the backward (and for merging)
// Query head h reads kv head h / (Hq / Hkv): PyTorch's enable_gqa / repeat_interleave.
// q, k, v, out, dout, dq, dk, dv are all f32 or all bf16 (computed and accumulated in f32;
// the CPU on f32 copies), lse stays f32. On a CUDA device hd is 1 to 256, and every
// tensor and the workspace sit on q's device. The scale is the caller's (the model passes
// 1 / sqrt(hd)).
//
// What forward keeps for backward: out and lse (B*Hq*T floats), never the T x Tk
// probabilities. The backward recomputes p[i, j] = exp(s[i, j] - lse[i]) block by block:
//   D[i]  = sum_d dout[i, d] * out[i, d]                    (a workspace row [B, Hq, T])
//   dv[j] += sum_i p[i, j] dout[i]          dp[i, j] = dout[i] . v[j]
//   ds[i, j] = p[i, j] * (dp[i, j] - D[i])
//   dq[i] += scale * sum_j ds[i, j] k[j]    dk[j] += scale * sum_i ds[i, j] q[i]
// Accumulation rule: dq, dk, dv are activation gradients: written (=), or added to (+=)
// with Accumulate::Yes (ring attention sums the contributions of every KV chunk).
//
// Workspace. The ops never allocate: the caller allocates `*_workspace_bytes(...)` bytes
// through the counted allocator (a u8 or f32 tensor) and passes it in; the op checks that
// it is big enough. The CPU backend needs per-thread tiles (Bq x Bk scores, Bq x hd
// accumulators, hd x Bk transposed keys and values: independent of T) plus, for the
// backward, D [B, Hq, T]: linear in T, never T x T. The thread count is the one the op
// will use, omp_get_max_threads() at the time of the call; size the workspace with the
// same number (titan::thread_count()). The GPU's forward needs no workspace (its tiles
// live in shared memory) and its backward only D; size a workspace for the device the op
// runs on with the overloads that take a Device.
//
// Ring attention (context parallel) computes a query chunk against one KV chunk at a
// time, causal on the diagonal chunk and None for chunks that lie wholly in the past,
// and merges the partial results by their log-sum-exp. Two partials (out_a, lse_a) and
// (out_b, lse_b) over disjoint key sets merge exactly into the attention over their union:
//   lse = log(exp(lse_a) + exp(lse_b)) = max + log1p(exp(min - max))
//   out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b
// attention_merge does this in place. The backward of the whole is then, per KV chunk,
// attention_backward with the merged out and lse (Accumulate::Yes into dq): D and p use
// the final normalizer, so each chunk's contribution is exact.
//
// Determinism: the forward splits (b, h, query block), the backward (b, kv head), and
// each result element is computed by one thread in one fixed order, so results are
// bitwise identical for any thread count and schedule.
//
// The GPU flash kernels (ops/cuda/attention*.cu). bf16 with hd a multiple of 16 up to 128
// (Llama's 64 and 128) runs on the tensor cores: 64 x 64 tiles, four warps of 16 rows,
// every product (Q K^T, P V; in the backward dO V^T, dS K, P^T dO, dS^T Q) a WMMA bf16
// 16x16x16 with f32 accumulators, P and dS rounded to bf16 for their products, the online
// softmax and every accumulator in f32. f32, and bf16 with other head dims, take a SIMT
// kernel on 16-row shared-memory tiles. The forward is one block per (b, h, query block);
// the backward follows FlashAttention-2's split: D first (into the workspace), then one
// block per (b, kv head, key block) that loops over the group's query heads and query
// blocks for dk and dv, then one block per (b, h, query block) for dq. No atomics: each
// element is summed by one thread in a fixed order, so GPU results are bitwise repeatable.
#pragma once

#include "titan/ops/attention_mask.h"
#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

enum class AttentionMask { Causal, None };

// Where the queries and keys sit in the whole sequence, and in which document: what ring
// attention (a rank's queries against another rank's keys) and per-document masks
// (block-causal) add to the plain masks. Key j is visible to query i of batch row b when
//   (mask == None || k_position[j] <= q_position[i])
//   && (no documents || q_document[b, i] == k_document[b, j])
// Without positions (a null AttentionPositions*, or undefined tensors) query i is at i and
// key j at j; without documents every token is in one document.
//   q_position  i32 [T]      strictly increasing global positions of the queries
//   k_position  i32 [Tk]     ... of the keys
//   q_document  i32 [B, T]   document ids, non-decreasing along t (a function of the
//   k_document  i32 [B, Tk]  global position that never decreases with it)
// All on the op's device; positions and documents each given for both sides or neither.
// With these orders the keys a query sees inside any key block are one contiguous range,
// and a (query block, key block) tile that the mask empties is skipped whole: the work of a
// block-causal attention is proportional to the sum of its documents' squared lengths,
// and a ring step against keys wholly in a query chunk's future costs nothing. A query
// that sees no key at all gets out = 0 and lse = -infinity (a ring partial; the merge
// below takes it as empty). Causal with positions needs no Tk == T. Both backends read the
// mask through ops/attention_mask.h, one definition for host and device code.
struct AttentionPositions {
  Tensor q_position, k_position;
  Tensor q_document, k_document;
  bool has_positions() const { return q_position.defined(); }
  bool has_documents() const { return q_document.defined(); }
};

// The kernels' view of a call's mask (ops/attention_mask.h): pointers into the tensors of
// `positions` (on their device), null where it has none or is null.
AttentionMaskView attention_mask_view(AttentionMask mask, const AttentionPositions* positions,
                                      int64_t T, int64_t Tk);

// Score elements the CPU kernels computed since the last reset (visible tiles x their
// rows x columns, summed over heads and batch rows): the attention FLOPs a rank did are
// 4 hd x forward (Q K^T and P V) and 8 hd x backward. Counted per process, for the load
// balance of context parallelism and the tests of skipped tiles.
struct AttentionWork {
  int64_t forward_scores = 0;
  int64_t backward_scores = 0;
};
AttentionWork attention_work();
void reset_attention_work();

// The dims of a call, as the checks read them from q and k.
struct AttentionDims {
  int64_t B, T, Tk, Hq, Hkv, hd;
};

// The checks both backends make first (ops/attention.cpp), given the backend's float
// dtypes: the shapes above; q of one of them, and k, v, out, dout, dq, dk, dv of q's dtype
// (merge: out of one of them, out_part of out's); lse and lse_part f32. Head dims and
// devices are each backend's to check.
// With positions (null: none), their dtypes, shapes and device, both sides or neither.
AttentionDims check_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      AttentionMask mask, const Tensor& out, const Tensor& lse,
                                      FloatDTypes accepted, const AttentionPositions* positions);
AttentionDims check_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                       const Tensor& v, const Tensor& out, const Tensor& lse,
                                       AttentionMask mask, const Tensor& dq, const Tensor& dk,
                                       const Tensor& dv, FloatDTypes accepted,
                                       const AttentionPositions* positions);
void check_attention_merge(const Tensor& out, const Tensor& lse, const Tensor& out_part,
                           const Tensor& lse_part, FloatDTypes accepted);

namespace cpu {
int64_t attention_forward_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                          int64_t hd, int threads);
int64_t attention_backward_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                           int64_t hd, int threads);
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                       AttentionMask mask, Tensor& out, Tensor& lse, Tensor& workspace,
                       const AttentionPositions* positions = nullptr);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, float scale, AttentionMask mask,
                        Tensor& dq, Tensor& dk, Tensor& dv, Accumulate accumulate,
                        Tensor& workspace, const AttentionPositions* positions = nullptr);
void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_part, const Tensor& lse_part);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
// GPU workspace: 0 bytes for the forward (its tiles live in shared memory), the D row
// [B, Hq, T] f32 for the backward.
int64_t attention_forward_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                          int64_t hd);
int64_t attention_backward_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                           int64_t hd);
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                       AttentionMask mask, Tensor& out, Tensor& lse, Tensor& workspace,
                       const AttentionPositions* positions = nullptr);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, float scale, AttentionMask mask,
                        Tensor& dq, Tensor& dk, Tensor& dv, Accumulate accumulate,
                        Tensor& workspace, const AttentionPositions* positions = nullptr);
void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_part, const Tensor& lse_part);

// Which kernel runs a (dtype, head dim), with its tiles and shared memory: host-side
// bookkeeping, exposed so that it can be tested without a GPU. Throws, naming the op, for
// a dtype other than f32 / bf16 or a head dim the GPU does not take (0 or > 256).
enum class AttentionPath { TensorCore, Simt };
struct AttentionPlan {
  AttentionPath path;
  int64_t block_q, block_k;  // forward and dq tiles (the dk/dv pass swaps their roles)
  int64_t threads;           // per block
  int64_t forward_shared_bytes, backward_dkdv_shared_bytes, backward_dq_shared_bytes;
};
AttentionPlan attention_plan(DType dtype, int64_t hd);
}  // namespace cuda
#endif

// Bytes of workspace the CPU kernels need with `threads` OpenMP threads; T is the query
// time (the backward's D row). Constant in T for the forward, linear for the backward.
inline int64_t attention_forward_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                                 int64_t hd, int threads) {
  return cpu::attention_forward_workspace_bytes(B, T, Hq, Hkv, hd, threads);
}
inline int64_t attention_backward_workspace_bytes(int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                                  int64_t hd, int threads) {
  return cpu::attention_backward_workspace_bytes(B, T, Hq, Hkv, hd, threads);
}
// The same for the device the op will run on (q's device): the CPU's sizes above, or the
// GPU's (threads ignored there). Callers that may run on either device use these.
inline int64_t attention_forward_workspace_bytes(Device device, int64_t B, int64_t T, int64_t Hq,
                                                 int64_t Hkv, int64_t hd, int threads) {
#if TITAN_HAVE_CUDA
  if (device.is_cuda()) return cuda::attention_forward_workspace_bytes(B, T, Hq, Hkv, hd);
#endif
  TITAN_CHECK(device.is_cpu()) << "attention_forward_workspace_bytes: no kernel for " << device;
  return cpu::attention_forward_workspace_bytes(B, T, Hq, Hkv, hd, threads);
}
inline int64_t attention_backward_workspace_bytes(Device device, int64_t B, int64_t T, int64_t Hq,
                                                  int64_t Hkv, int64_t hd, int threads) {
#if TITAN_HAVE_CUDA
  if (device.is_cuda()) return cuda::attention_backward_workspace_bytes(B, T, Hq, Hkv, hd);
#endif
  TITAN_CHECK(device.is_cpu()) << "attention_backward_workspace_bytes: no kernel for " << device;
  return cpu::attention_backward_workspace_bytes(B, T, Hq, Hkv, hd, threads);
}

// A workspace for one call on q's device, sized with the thread count in force: the
// counted allocation the caller makes for the op (the ops themselves never allocate).
Tensor attention_forward_workspace(const Tensor& q, const Tensor& k);
Tensor attention_backward_workspace(const Tensor& q, const Tensor& k);

// positions: null (or empty) for the plain masks, else ring chunks and documents as above.
inline void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                              AttentionMask mask, Tensor& out, Tensor& lse, Tensor& workspace,
                              const AttentionPositions* positions = nullptr) {
  TITAN_DISPATCH_CPU_CUDA(q, attention_forward, q, k, v, scale, mask, out, lse, workspace,
                          positions);
}
inline void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse, float scale,
                               AttentionMask mask, Tensor& dq, Tensor& dk, Tensor& dv,
                               Accumulate accumulate, Tensor& workspace,
                               const AttentionPositions* positions = nullptr) {
  TITAN_DISPATCH_CPU_CUDA(q, attention_backward, dout, q, k, v, out, lse, scale, mask, dq, dk, dv,
                          accumulate, workspace, positions);
}
// (out, lse) <- the merge of (out, lse) and (out_part, lse_part), shapes as above.
inline void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_part,
                            const Tensor& lse_part) {
  TITAN_DISPATCH_CPU_CUDA(out, attention_merge, out, lse, out_part, lse_part);
}

}  // namespace titan::ops

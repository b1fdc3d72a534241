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
// Positions and documents (AttentionPositions: ring attention, block-causal masks) enter
// every kernel as device pointers in Dims::mask, ops/attention_mask.h's view, so that the
// GPU and the CPU share one definition: tiles it empties are skipped whole (the grid stays
// the same; a block walks fewer tiles) and each score is masked by the same rule. A row
// that sees no key gets out 0 and lse -inf, and p = 0 in the backward. Without them the
// kernels walk the tiles and do the arithmetic they always did.
// Backward (FlashAttention-2's split, deterministic: no atomics, every output element
// written by one thread in one fixed order):
//   1. D[b, h, i] = dout . out, one warp per row, into the workspace;
//   2. dk, dv: one block per (b, kv head, key block) looping over every query head of the
//      group and every query block (from the diagonal, when causal by index);
//   3. dq: one block per (b, h, query block) looping over the key blocks.
// P is recomputed from lse in both 2 and 3. Merge: one warp per (b, i, h) row.
//
// This file holds the plan, the workspace sizes, the GPU's own checks (after the shared
// ones of ops/attention.cpp), the D and merge kernels, and the entry points. The TensorCore
// kernels are in attention_wmma.cu, the Simt ones in attention_simt.cu, and what both
// families share in attention_kernels.cuh.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "titan/ops/attention.h"
#include "titan/ops/cuda/attention_kernels.cuh"

namespace titan::ops::cuda {

// The plan and the launches below use the kernels' tiles, layouts and launches unqualified.
using namespace flash_attention;

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
// holds the blocks. Positions and documents (checked by the shared checks: i32, their
// shapes, q's device) go in as device pointers; an empty AttentionPositions is the plain
// mask. Their orders (increasing positions, non-decreasing documents) are the caller's:
// checking them would cost a device pass and a synchronization per call.
Dims kernel_dims(const AttentionDims& s, DType dtype, float scale, AttentionMask mask,
                 const AttentionPositions* positions, const char* op) {
  attention_plan(dtype, s.hd);  // throws for an unsupported dtype or head dim
  // One block per (b, head, 16-row block) at most: the grid's x dimension must hold them.
  const int64_t blocks =
      s.B * std::max(s.Hq, s.Hkv) * ceil_div(std::max(s.T, s.Tk), kSimtBackwardBlock);
  TITAN_CHECK(blocks < (int64_t(1) << 31)) << op << " (cuda): " << blocks << " blocks is too many";
  return Dims{s.B, s.T, s.Tk, s.Hq, s.Hkv, s.hd, s.Hq / s.Hkv, scale,
              attention_mask_view(mask, positions, s.T, s.Tk)};
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

template <class T>
void forward_launch(const Dims& d, const AttentionPlan& plan, const Tensor& q, const Tensor& k,
                    const Tensor& v, Tensor& out, Tensor& lse) {
  const T* qp = static_cast<const T*>(q.raw_data());
  const T* kp = static_cast<const T*>(k.raw_data());
  const T* vp = static_cast<const T*>(v.raw_data());
  T* op = static_cast<T*>(out.raw_mutable_data());
  float* lp = lse.mutable_data<float>();
  if constexpr (std::is_same_v<T, bf16>) {
    if (plan.path == AttentionPath::TensorCore) {
      forward_wmma(d, plan, qp, kp, vp, op, lp);
      return;
    }
  }
  forward_simt<T>(d, plan, qp, kp, vp, op, lp);
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

  if constexpr (std::is_same_v<T, bf16>) {
    if (plan.path == AttentionPath::TensorCore) {
      backward_wmma(d, plan, qp, kp, vp, gp, lp, D, dqp, dkp, dvp, add);
      return;
    }
  }
  backward_simt<T>(d, plan, qp, kp, vp, gp, lp, D, dqp, dkp, dvp, add);
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                       AttentionMask mask, Tensor& out, Tensor& lse, Tensor& workspace,
                       const AttentionPositions* positions) {
  const char* op = "attention_forward";
  const Dims d =
      kernel_dims(check_attention_forward(q, k, v, mask, out, lse, kFloatDTypes, positions),
                  q.dtype(), scale, mask, positions, op);
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
                        Tensor& workspace, const AttentionPositions* positions) {
  const char* op = "attention_backward";
  const Dims d = kernel_dims(check_attention_backward(dout, q, k, v, out, lse, mask, dq, dk, dv,
                                                      kFloatDTypes, positions),
                             q.dtype(), scale, mask, positions, op);
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

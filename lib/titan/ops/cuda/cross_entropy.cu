// Cross-entropy on the GPU (contract in ops/cross_entropy.h). Per chunk of C tokens:
//   logits = h_chunk W^T      ops::cuda::matmul (cuBLASLt, f32 compute) into the f32 workspace
//   forward: row_lse_kernel   one block per row: max, then sum of exp(z - max) in double
//                             (expf per element, as the CPU's float exp), lse = max + log(sum)
//            chunk_loss_kernel one block: lse - logit[label] per row in double, added in token
//                             order by one thread into the chunk's sum, which is added to a
//                             running double total (the CPU's order exactly), written to
//                             loss_sum as f32 after every chunk
//   backward: dlogits_kernel  (exp(z - lse) - [v == label]) * grad_scale, the CPU's float
//                             operations in its order (no fused multiply-add), then the dh
//                             (= or +=) and dweight (+=) GEMMs.
// bf16 h and weight: the logits GEMM is bf16 x bf16 -> f32 (so lse and the loss see the
// same logits as the CPU on the bf16 values, up to summation order), and the backward GEMMs
// need bf16 dlogits: each row's dlogits are written as bf16 over the first half of that
// row's own f32 logits (tile by tile, each tile read before it is written, so no thread
// overwrites a logit another has yet to read), and the GEMMs read them with a leading
// dimension of 2V through the backend's strided gemm (ops/cuda/gemm.h; a Tensor cannot view
// f32 bytes as bf16). Rounding dlogits to bf16 is the one extra error of the bf16 path.
// Labels live on the GPU beside h and are checked there, in stream order, without a wait:
// check_labels_kernel records the first id it meets that is neither a vocabulary index nor
// the ignore index in this device's label_error, the kernels read no logit for such an id,
// and ops::raise_label_error (called where the loss is read, which waits anyway) throws the
// CPU's message for it. The running loss total is
// this file's __device__ double (one per device), used in stream order on
// compute_stream(): like cuBLASLt's workspace, two streams must not run this op at once.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "titan/core/copy.h"
#include "titan/ops/cross_entropy.h"
#include "titan/ops/cuda/common.cuh"
#include "titan/ops/cuda/gemm.h"
#include "titan/ops/matmul.h"

namespace titan::ops::cuda {
namespace {

constexpr int kThreads = 256;  // per row; the block reductions need a power of two
constexpr int64_t kIgnore = kIgnoreIndex;

__device__ double loss_total;  // the forward's running sum, carried across chunks

// The first bad label a check kernel met since the last raise_label_error, one per device.
// `op` is the host address of the calling op's name (a string literal), kept as a number
// and never dereferenced on the device.
constexpr unsigned long long kNoLabelError = ~0ull;
struct LabelError {
  unsigned long long token;  // kNoLabelError: none
  long long label, vocab;
  unsigned long long op;
};
__device__ LabelError label_error = {kNoLabelError, 0, 0, 0};

template <class L>
__global__ void check_labels_kernel(const L* labels, int64_t tokens, int64_t vocab,
                                    unsigned long long op) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < tokens;
       n += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = int64_t(labels[n]);
    if ((id >= 0 && id < vocab) || id == kIgnore) continue;
    if (atomicCAS(&label_error.token, kNoLabelError, static_cast<unsigned long long>(n)) ==
        kNoLabelError) {
      label_error.label = id;  // only the thread that claimed the record writes the rest
      label_error.vocab = vocab;
      label_error.op = op;
    }
  }
}

// lse[r] = max + log(sum_v exp(z[r, v] - max)) for rows [0, rows) of logits [rows, V].
template <class T>
__global__ void row_lse_kernel(const T* logits, int64_t rows, int64_t V, float* lse) {
  __shared__ float max_shared[kThreads];
  __shared__ double sum_shared[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* z = logits + r * V;
    float max = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) max = fmaxf(max, load(z, v));
    max = block_max(max, max_shared);
    double sum = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += double(expf(__fsub_rn(load(z, v), max)));
    sum = block_sum(sum, sum_shared);
    if (threadIdx.x == 0) lse[r] = float(double(max) + log(sum));
  }
}

// Sums lse[r] - logits[r, label[r]] over the valid rows of one chunk in row order, adds
// that sum to the running total, and writes the total to loss_sum[0]. One block: its threads fetch a tile
// of terms, thread 0 adds them one by one.
template <class T, class L>
__global__ void chunk_loss_kernel(const T* logits, int64_t rows, int64_t V, const L* labels,
                                  const float* lse, bool first_chunk, float* loss_sum) {
  __shared__ double terms[kThreads];
  // The CPU sums each chunk from 0 and then adds the chunk's sum to the running total.
  double total = 0.0;  // meaningful in thread 0 only
  for (int64_t base = 0; base < rows; base += blockDim.x) {
    const int64_t r = base + threadIdx.x;
    double term = 0;  // ignored rows add nothing (the CPU skips them)
    if (r < rows) {
      const int64_t label = int64_t(labels[r]);
      // An id outside the vocabulary reads nothing (check_labels_kernel records it).
      if (label >= 0 && label < V) term = double(lse[r]) - double(load(logits, r * V + label));
    }
    terms[threadIdx.x] = term;
    __syncthreads();
    if (threadIdx.x == 0) {
      const int64_t count = min(int64_t(blockDim.x), rows - base);
      for (int64_t i = 0; i < count; ++i) total += terms[i];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (!first_chunk) total = loss_total + total;
    loss_total = total;
    loss_sum[0] = float(total);
  }
}

// dlogits[r, v] = (exp(z[r, v] - lse[r]) * scale, += when add) then -= scale at the label;
// ignored rows get 0 (or keep their values when add). Rows have leading dimensions ld_in
// and ld_out (elements). The output may overlay the input row (in place, or bf16 over the
// first half of an f32 row): each tile of the row is read, then the block waits, then
// written, so a write never lands on a logit not yet read.
template <class TIn, class TOut, class L>
__global__ void dlogits_kernel(const TIn* logits, int64_t ld_in, TOut* dlogits, int64_t ld_out,
                               int64_t rows, int64_t V, const L* labels, const float* lse,
                               float scale, bool add) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const TIn* z = logits + r * ld_in;
    TOut* dz = dlogits + r * ld_out;
    const int64_t label = int64_t(labels[r]);
    const bool ignored = label == kIgnore;
    const float row_lse = lse[r];
    for (int64_t base = 0; base < V; base += blockDim.x) {
      const int64_t v = base + threadIdx.x;
      float g = 0;
      if (v < V && !ignored) g = __fmul_rn(expf(__fsub_rn(load(z, v), row_lse)), scale);
      __syncthreads();  // the tile is read before any of it is written
      if (v < V && !(ignored && add)) {
        float out = add ? __fadd_rn(load(dz, v), g) : g;
        if (v == label) out = __fsub_rn(out, scale);
        store(dz, v, out);
      }
    }
    __syncthreads();  // the next row's tiles never overlap this one's, but keep rows apart
  }
}

// ---- device-side checks (after the shared ones of ops/cross_entropy.cpp) ----

void check_on(const Tensor& t, Device device, const char* op, const char* arg) {
  TITAN_CHECK(t.defined()) << op << ": " << arg << " is undefined";
  TITAN_CHECK(t.device() == device && device.is_cuda())
      << op << " (cuda): " << arg << " is on " << t.device() << ", expected " << device
      << " (every tensor on one CUDA device)";
}

// Labels on the device, each a vocabulary index or kIgnoreIndex: checked on the compute
// stream (after the communication stream's delivery of them, which it waits for), the first
// bad one recorded for raise_label_error.
void check_label_ids(const Tensor& labels, int64_t tokens, int64_t vocab, Device device,
                     const char* op) {
  TITAN_CHECK(labels.defined()) << op << ": labels is undefined";
  check_on(labels, device, op, "labels");
  if (tokens == 0) return;
  const auto op_address = static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(op));
  const int blocks = grid_for(tokens, kThreads);
  if (labels.dtype() == DType::I64) {
    check_labels_kernel<<<blocks, kThreads, 0, compute_stream()>>>(labels.data<int64_t>(),
                                                                   tokens, vocab, op_address);
  } else {
    check_labels_kernel<<<blocks, kThreads, 0, compute_stream()>>>(labels.data<int32_t>(),
                                                                   tokens, vocab, op_address);
  }
  check_launch("check_labels_kernel");
}

// Last of the checks, so that dtype and shape errors read the same on a machine without a
// GPU: every tensor on the first one's CUDA device.
struct Named {
  const Tensor* tensor;
  const char* name;
};
void check_devices(std::initializer_list<Named> tensors, const char* op) {
  const Device device = tensors.begin()->tensor->device();
  for (const Named& t : tensors) {
    if (t.tensor != nullptr) check_on(*t.tensor, device, op, t.name);
  }
}

// ---- launches ----

template <class T>
void launch_row_lse(const Tensor& logits, int64_t rows, int64_t V, float* lse) {
  row_lse_kernel<T><<<grid_for(rows * kThreads, kThreads), kThreads, 0, compute_stream()>>>(
      static_cast<const T*>(logits.raw_data()), rows, V, lse);
  check_launch("row_lse_kernel");
}

template <class T>
void launch_chunk_loss(const Tensor& logits, int64_t rows, int64_t V, const Tensor& labels,
                       int64_t first, const float* lse, bool first_chunk, Tensor& loss_sum) {
  const T* z = static_cast<const T*>(logits.raw_data());
  float* out = loss_sum.mutable_data<float>();
  if (labels.dtype() == DType::I32) {
    chunk_loss_kernel<T, int32_t><<<1, kThreads, 0, compute_stream()>>>(
        z, rows, V, labels.data<int32_t>() + first, lse, first_chunk, out);
  } else {
    chunk_loss_kernel<T, int64_t><<<1, kThreads, 0, compute_stream()>>>(
        z, rows, V, labels.data<int64_t>() + first, lse, first_chunk, out);
  }
  check_launch("chunk_loss_kernel");
}

template <class TIn, class TOut>
void launch_dlogits(const TIn* z, int64_t ld_in, TOut* dz, int64_t ld_out, int64_t rows,
                    int64_t V, const Tensor& labels, int64_t first, const float* lse,
                    float scale, bool add) {
  const unsigned grid = grid_for(rows * kThreads, kThreads);
  if (labels.dtype() == DType::I32) {
    dlogits_kernel<TIn, TOut, int32_t><<<grid, kThreads, 0, compute_stream()>>>(
        z, ld_in, dz, ld_out, rows, V, labels.data<int32_t>() + first, lse, scale, add);
  } else {
    dlogits_kernel<TIn, TOut, int64_t><<<grid, kThreads, 0, compute_stream()>>>(
        z, ld_in, dz, ld_out, rows, V, labels.data<int64_t>() + first, lse, scale, add);
  }
  check_launch("dlogits_kernel");
}

// N tokens and V vocabulary entries of a fused call (already checked).
struct Dims {
  int64_t tokens, vocab;
};

// forward_backward's loss outputs (lse is also the `lse` the chunks read).
struct LossOutputs {
  Tensor& loss_sum;
  Tensor& lse;
};

// Per chunk: recompute the logits (or, given `loss`, compute them once for the loss too:
// lse and the loss sum first), dlogits over them, then the dh and/or dweight GEMMs (a null
// output skips its GEMM). The checks are the caller's.
void fused_backward(const Tensor& h, const Tensor& weight, const Tensor& labels, const Tensor& lse,
                    float grad_scale, Tensor* dh, Tensor* dweight, Accumulate accumulate_dh,
                    Tensor& workspace, const char* op, LossOutputs* loss = nullptr) {
  const Dims d{h.size(0), weight.size(0)};
  check_devices({{&h, "h"}, {&weight, "weight"}, {&workspace, "workspace"}, {&lse, "lse"},
                 {&labels, "labels"}, {dh, "dh"}, {dweight, "dweight"},
                 {loss ? &loss->loss_sum : nullptr, "loss_sum"}},
                op);
  const Device device = h.device();
  DeviceGuard guard(device.index);
  check_label_ids(labels, d.tokens, d.vocab, device, op);
  if (loss != nullptr && d.tokens == 0) {
    CUDA_CHECK(cudaMemsetAsync(loss->loss_sum.raw_mutable_data(), 0, sizeof(float),
                               compute_stream()));
  }
  const bool bf16 = h.dtype() == DType::BF16;
  const int64_t chunk = workspace.size(0), V = d.vocab;
  for (int64_t first = 0; first < d.tokens; first += chunk) {
    const int64_t rows = std::min(chunk, d.tokens - first);
    const Tensor h_chunk = h.narrow(first, rows);
    Tensor logits = workspace.narrow(0, rows);
    ops::cuda::matmul(h_chunk, Transpose::No, weight, Transpose::Yes, logits, 1.0f, 0.0f);
    if (loss != nullptr) {
      float* chunk_lse = loss->lse.mutable_data<float>() + first;
      launch_row_lse<float>(logits, rows, V, chunk_lse);
      launch_chunk_loss<float>(logits, rows, V, labels, first, chunk_lse, first == 0,
                               loss->loss_sum);
    }
    float* z = logits.mutable_data<float>();
    const float* row_lse = lse.data<float>() + first;
    const float dh_beta = accumulate_dh == Accumulate::Yes ? 1.0f : 0.0f;
    if (!bf16) {
      launch_dlogits<float, float>(z, V, z, V, rows, V, labels, first, row_lse, grad_scale, false);
      if (dh != nullptr) {
        Tensor dh_chunk = dh->narrow(first, rows);
        ops::cuda::matmul(logits, Transpose::No, weight, Transpose::No, dh_chunk, 1.0f, dh_beta);
      }
      if (dweight != nullptr) {
        ops::cuda::matmul(logits, Transpose::Yes, h_chunk, Transpose::No, *dweight, 1.0f, 1.0f);
      }
      continue;
    }
    // bf16 dlogits over the first half of each f32 row: [rows, V] with leading dim 2V.
    auto* dz = reinterpret_cast<__nv_bfloat16*>(z);
    launch_dlogits<float, __nv_bfloat16>(z, V, dz, 2 * V, rows, V, labels, first, row_lse,
                                         grad_scale, false);
    const DeviceMatrix dlogits{dz, DType::BF16, rows, V, 2 * V};
    if (dh != nullptr) {
      const Tensor dh_chunk = dh->narrow(first, rows);
      gemm(device.index, dlogits, Transpose::No, device_matrix(weight), Transpose::No,
           device_matrix(dh_chunk), 1.0f, dh_beta, op);
    }
    if (dweight != nullptr) {
      gemm(device.index, dlogits, Transpose::Yes, device_matrix(h_chunk), Transpose::No,
           device_matrix(*dweight), 1.0f, 1.0f, op);
    }
  }
}

}  // namespace

void cross_entropy_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                           Tensor& loss_sum, Tensor& lse, Tensor& workspace) {
  const char* op = "cross_entropy_forward";
  check_cross_entropy_forward(h, weight, labels, loss_sum, lse, workspace, kFloatDTypes);
  const Dims d{h.size(0), weight.size(0)};
  check_devices({{&h, "h"}, {&weight, "weight"}, {&workspace, "workspace"},
                 {&loss_sum, "loss_sum"}, {&lse, "lse"}, {&labels, "labels"}},
                op);
  const Device device = h.device();
  DeviceGuard guard(device.index);
  check_label_ids(labels, d.tokens, d.vocab, device, op);
  if (d.tokens == 0) {
    CUDA_CHECK(cudaMemsetAsync(loss_sum.raw_mutable_data(), 0, sizeof(float), compute_stream()));
    return;
  }
  const int64_t chunk = workspace.size(0);
  float* lse_data = lse.mutable_data<float>();
  for (int64_t first = 0; first < d.tokens; first += chunk) {
    const int64_t rows = std::min(chunk, d.tokens - first);
    Tensor logits = workspace.narrow(0, rows);
    ops::cuda::matmul(h.narrow(first, rows), Transpose::No, weight, Transpose::Yes, logits, 1.0f, 0.0f);
    launch_row_lse<float>(logits, rows, d.vocab, lse_data + first);
    launch_chunk_loss<float>(logits, rows, d.vocab, labels, first, lse_data + first, first == 0,
                             loss_sum);
  }
}

void cross_entropy_backward_input(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  const Tensor& lse, float grad_scale, Tensor& dh,
                                  Accumulate accumulate, Tensor& workspace) {
  const char* op = "cross_entropy_backward_input";
  check_cross_entropy_backward(h, weight, labels, lse, &dh, nullptr, workspace, kFloatDTypes, op);
  fused_backward(h, weight, labels, lse, grad_scale, &dh, nullptr, accumulate, workspace, op);
}

void cross_entropy_backward_weight(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                   const Tensor& lse, float grad_scale, Tensor& dweight,
                                   Tensor& workspace) {
  const char* op = "cross_entropy_backward_weight";
  check_cross_entropy_backward(h, weight, labels, lse, nullptr, &dweight, workspace, kFloatDTypes,
                               op);
  fused_backward(h, weight, labels, lse, grad_scale, nullptr, &dweight, Accumulate::Yes, workspace,
                 op);
}

void cross_entropy_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                            const Tensor& lse, float grad_scale, Tensor& dh, Tensor& dweight,
                            Accumulate accumulate_dh, Tensor& workspace) {
  const char* op = "cross_entropy_backward";
  check_cross_entropy_backward(h, weight, labels, lse, &dh, &dweight, workspace, kFloatDTypes, op);
  fused_backward(h, weight, labels, lse, grad_scale, &dh, &dweight, accumulate_dh, workspace, op);
}

void cross_entropy_forward_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                    float grad_scale, Tensor& loss_sum, Tensor& lse, Tensor& dh,
                                    Tensor& dweight, Accumulate accumulate_dh,
                                    Tensor& workspace) {
  const char* op = "cross_entropy_forward_backward";
  check_cross_entropy_forward_backward(h, weight, labels, loss_sum, lse, dh, dweight, workspace,
                                       kFloatDTypes);
  LossOutputs loss{loss_sum, lse};
  fused_backward(h, weight, labels, lse, grad_scale, &dh, &dweight, accumulate_dh, workspace, op,
                 &loss);
}

void cross_entropy_logits_forward(const Tensor& logits, const Tensor& labels, Tensor& loss_sum,
                                  Tensor& lse) {
  const char* op = "cross_entropy_logits_forward";
  check_cross_entropy_logits_forward(logits, labels, loss_sum, lse, kFloatDTypes);
  const int64_t tokens = logits.size(0), vocab = logits.size(1);
  check_devices(
      {{&logits, "logits"}, {&loss_sum, "loss_sum"}, {&lse, "lse"}, {&labels, "labels"}}, op);
  const Device device = logits.device();
  DeviceGuard guard(device.index);
  check_label_ids(labels, tokens, vocab, device, op);
  if (tokens == 0) {
    CUDA_CHECK(cudaMemsetAsync(loss_sum.raw_mutable_data(), 0, sizeof(float), compute_stream()));
    return;
  }
  float* lse_data = lse.mutable_data<float>();
  if (logits.dtype() == DType::F32) {
    launch_row_lse<float>(logits, tokens, vocab, lse_data);
    launch_chunk_loss<float>(logits, tokens, vocab, labels, 0, lse_data, true, loss_sum);
  } else {
    launch_row_lse<__nv_bfloat16>(logits, tokens, vocab, lse_data);
    launch_chunk_loss<__nv_bfloat16>(logits, tokens, vocab, labels, 0, lse_data, true, loss_sum);
  }
}

void cross_entropy_logits_backward(const Tensor& logits, const Tensor& labels, const Tensor& lse,
                                   float grad_scale, Tensor& dlogits, Accumulate accumulate) {
  const char* op = "cross_entropy_logits_backward";
  check_cross_entropy_logits_backward(logits, labels, lse, dlogits, kFloatDTypes);
  const int64_t tokens = logits.size(0), vocab = logits.size(1);
  check_devices(
      {{&logits, "logits"}, {&lse, "lse"}, {&dlogits, "dlogits"}, {&labels, "labels"}}, op);
  const Device device = logits.device();
  DeviceGuard guard(device.index);
  check_label_ids(labels, tokens, vocab, device, op);
  if (tokens == 0) return;
  const bool add = accumulate == Accumulate::Yes;
  const float* row_lse = lse.data<float>();
  const bool in_f32 = logits.dtype() == DType::F32, out_f32 = dlogits.dtype() == DType::F32;
  const void* z = logits.raw_data();
  void* dz = dlogits.raw_mutable_data();
  const int64_t V = vocab;
  if (in_f32 && out_f32) {
    launch_dlogits(static_cast<const float*>(z), V, static_cast<float*>(dz), V, tokens, V, labels,
                   0, row_lse, grad_scale, add);
  } else if (in_f32) {
    launch_dlogits(static_cast<const float*>(z), V, static_cast<__nv_bfloat16*>(dz), V, tokens, V,
                   labels, 0, row_lse, grad_scale, add);
  } else if (out_f32) {
    launch_dlogits(static_cast<const __nv_bfloat16*>(z), V, static_cast<float*>(dz), V, tokens, V,
                   labels, 0, row_lse, grad_scale, add);
  } else {
    launch_dlogits(static_cast<const __nv_bfloat16*>(z), V, static_cast<__nv_bfloat16*>(dz), V,
                   tokens, V, labels, 0, row_lse, grad_scale, add);
  }
}

void raise_label_error(Device device) {
  TITAN_CHECK(device.is_cuda()) << "raise_label_error (cuda): " << device << " is not a GPU";
  DeviceGuard guard(device.index);
  LabelError seen;
  CUDA_CHECK(cudaMemcpyFromSymbolAsync(&seen, label_error, sizeof seen, 0,
                                       cudaMemcpyDeviceToHost, compute_stream()));
  CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
  if (seen.token == kNoLabelError) return;
  const LabelError none = {kNoLabelError, 0, 0, 0};
  CUDA_CHECK(cudaMemcpyToSymbolAsync(label_error, &none, sizeof none, 0, cudaMemcpyHostToDevice,
                                     compute_stream()));
  CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
  check_cross_entropy_label(seen.label, int64_t(seen.token), seen.vocab,
                            reinterpret_cast<const char*>(static_cast<uintptr_t>(seen.op)));
}

}  // namespace titan::ops::cuda

// Mixture-of-experts routing and token movement on the GPU (contract in ops/moe.h), the CPU
// kernels' formulas in f32:
//   router    one block per token: the scores in parallel, then one thread makes the
//             choice with the CPU's own definition (ops/moe_choice.h); E is at most a few
//             hundred, K a handful.
//   dispatch  one thread per element of the sorted rows.
//   combine   one block per token, which adds its K rows in ascending m (the sorted rows
//             of its picks, from the inverse of `order`), as the CPU does; the backward of
//             dispatch is the same sum over dxs.
//   dweights  one block per sorted row: a fixed-tree dot product (deterministic; its sum
//             order differs from the CPU's sequential one).
#include <cuda_bf16.h>

#include "titan/core/allocator.h"
#include "titan/ops/cuda/common.cuh"
#include "titan/ops/moe.h"
#include "titan/ops/moe_choice.h"

namespace titan::ops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRouterThreads = 128;  // per token; the block reductions need a power of two

struct RouterParams {
  int64_t N, E, K, groups, limited_groups;
  bool sigmoid, route_norm, force_balance;
  float route_scale;
};

// Shared memory: reduction slots [blockDim] doubles, s [E] and c [E] floats, then kept [E]
// and group_kept [groups] bytes.
size_t router_forward_shared_bytes(int64_t E, int64_t groups, int threads) {
  return size_t(threads) * sizeof(double) + size_t(2 * E) * sizeof(float) + size_t(E + groups);
}

template <class T>
__global__ void router_forward_kernel(const T* logits, const float* bias, RouterParams p,
                                      float* scores, int32_t* selected, float* weights) {
  extern __shared__ double router_shared[];
  double* slots = router_shared;
  float* s = reinterpret_cast<float*>(slots + blockDim.x);
  float* c = s + p.E;
  char* kept = reinterpret_cast<char*>(c + p.E);
  char* group_kept = kept + p.E;
  const int64_t n = blockIdx.x, E = p.E, K = p.K;
  const T* l = logits + n * E;
  if (p.sigmoid) {
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      s[e] = 1.0f / (1.0f + expf(-load(l, e)));
    }
  } else {
    float m = -INFINITY;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) m = fmaxf(m, load(l, e));
    m = block_max(m, reinterpret_cast<float*>(slots));
    double sum = 0.0;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) sum += (s[e] = expf(load(l, e) - m));
    const float total = float(block_sum(sum, slots));
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) s[e] /= total;
  }
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    scores[n * E + e] = s[e];
    c[e] = s[e] + (bias ? bias[e] : 0.0f);
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  int32_t* sel = selected + n * K;
  if (p.force_balance) {
    for (int64_t k = 0; k < K; ++k) sel[k] = int32_t((n * K + k) % E);
  } else {
    choose_experts(c, E, p.groups, p.limited_groups, K, kept, group_kept, sel);
  }
  float* w = weights + n * K;
  float total = 0.0f;
  for (int64_t k = 0; k < K; ++k) total += (w[k] = s[sel[k]]);
  for (int64_t k = 0; k < K; ++k) {
    w[k] = (p.route_norm ? w[k] / (total + 1e-20f) : w[k]) * p.route_scale;
  }
}

// Shared memory: reduction slots [blockDim] doubles, then ds [E] floats.
template <class T>
__global__ void router_backward_kernel(const float* dweights, const float* scores,
                                       const int32_t* selected, RouterParams p, T* dlogits) {
  extern __shared__ double router_shared[];
  double* slots = router_shared;
  float* ds = reinterpret_cast<float*>(slots + blockDim.x);
  const int64_t n = blockIdx.x, E = p.E, K = p.K;
  const float* s = scores + n * E;
  const int32_t* sel = selected + n * K;
  const float* dw = dweights + n * K;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) ds[e] = 0.0f;
  __syncthreads();
  if (threadIdx.x == 0) {
    if (p.route_norm) {
      float total = 0.0f, weighted = 0.0f;
      for (int64_t k = 0; k < K; ++k) total += s[sel[k]];
      total += 1e-20f;
      for (int64_t k = 0; k < K; ++k) weighted += dw[k] * s[sel[k]];
      for (int64_t k = 0; k < K; ++k) {
        ds[sel[k]] = p.route_scale * (dw[k] - weighted / total) / total;
      }
    } else {
      for (int64_t k = 0; k < K; ++k) ds[sel[k]] = p.route_scale * dw[k];
    }
  }
  __syncthreads();
  T* dl = dlogits + n * E;
  if (p.sigmoid) {
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      store(dl, e, ds[e] * s[e] * (1.0f - s[e]));
    }
    return;
  }
  double dot = 0.0;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) dot += double(ds[e] * s[e]);
  const float total = float(block_sum(dot, slots));
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) store(dl, e, s[e] * (ds[e] - total));
}

// xs[m] = x[order[m] / K] (times weights[order[m]]).
template <class T>
__global__ void dispatch_kernel(const T* x, const int32_t* order, int64_t K,
                                const float* weights, T* xs, int64_t M, int64_t D) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < M * D; i += stride) {
    const int64_t m = i / D, d = i % D, p = order[m];
    const float v = load(x, (p / K) * D + d);
    store(xs, i, weights ? v * weights[p] : v);
  }
}

// rows[order[m]] = m: the sorted row of each pick.
__global__ void invert_kernel(const int32_t* order, int64_t M, int32_t* rows) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; m < M; m += stride) {
    rows[order[m]] = int32_t(m);
  }
}

// out[n] (+= or, with `overwrite`, =) the sum over its picks, in ascending sorted row m, of
// picks[m] (times weights[order[m]]); one block per token, K row indices in shared memory.
template <class T>
__global__ void gather_sum_kernel(const T* picks, const int32_t* rows, const int32_t* order,
                                  int64_t K, const float* weights, T* out, int64_t D,
                                  bool overwrite) {
  extern __shared__ int32_t mine[];
  const int64_t n = blockIdx.x;
  if (threadIdx.x == 0) {  // insertion sort of the token's K rows
    for (int64_t j = 0; j < K; ++j) {
      const int32_t m = rows[n * K + j];
      int64_t at = j;
      for (; at > 0 && mine[at - 1] > m; --at) mine[at] = mine[at - 1];
      mine[at] = m;
    }
  }
  __syncthreads();
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = overwrite ? 0.0f : load(out, n * D + d);
    for (int64_t j = 0; j < K; ++j) {
      const int64_t m = mine[j];
      const float v = load(picks, m * D + d);
      acc += weights ? v * weights[order[m]] : v;
    }
    store(out, n * D + d, acc);
  }
}

// dweights[order[m]] = rows[m] . tokens[order[m] / K]; one block per sorted row.
template <class T>
__global__ void pick_dot_kernel(const T* rows, const T* tokens, const int32_t* order, int64_t K,
                                int64_t D, float* dweights) {
  extern __shared__ double slots[];
  const int64_t m = blockIdx.x, p = order[m];
  double dot = 0.0;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    dot += double(load(rows, m * D + d) * load(tokens, (p / K) * D + d));
  }
  const double total = block_sum(dot, slots);
  if (threadIdx.x == 0) dweights[p] = float(total);
}

RouterParams router_params(const Tensor& scores, const RouterOptions& o) {
  return {scores.size(0), scores.size(1), o.top_k, o.groups, o.limited_groups,
          o.score == RouterScore::Sigmoid, o.route_norm, o.force_balance, o.route_scale};
}

const float* weights_or_null(const Tensor& weights) {
  return weights.defined() ? weights.data<float>() : nullptr;
}

// Launches kernel<T> for the rows' dtype (f32 or bf16, checked before).
#define TITAN_MOE_LAUNCH(dtype, kernel, grid, threads, shared_bytes, ...)                    \
  do {                                                                                       \
    if ((dtype) == DType::F32) {                                                             \
      using T = float;                                                                       \
      kernel<T><<<(grid), (threads), (shared_bytes), compute_stream()>>>(__VA_ARGS__);       \
    } else {                                                                                 \
      using T = __nv_bfloat16;                                                               \
      kernel<T><<<(grid), (threads), (shared_bytes), compute_stream()>>>(__VA_ARGS__);       \
    }                                                                                        \
    check_launch(#kernel);                                                                   \
  } while (0)

// The K sorted rows of each token (the inverse of order), on the device.
Tensor rows_by_token(const Tensor& order, int64_t M) {
  Tensor rows = Tensor::empty({M}, DType::I32, order.device());
  invert_kernel<<<grid_for(M, kThreads), kThreads, 0, compute_stream()>>>(
      order.data<int32_t>(), M, rows.mutable_data<int32_t>());
  check_launch("invert_kernel");
  return rows;
}

}  // namespace

void router_forward(const Tensor& logits, const Tensor& bias, const RouterOptions& o,
                    Tensor& scores, Tensor& selected, Tensor& weights) {
  check_router(logits, bias, o, scores, selected, weights, kFloatDTypes);
  check_on_one_device({{&logits, "logits"}, {&scores, "scores"}, {&selected, "selected"},
                       {&weights, "weights"}},
                      "router_forward");
  if (bias.defined()) check_on_one_device({{&logits, "logits"}, {&bias, "bias"}}, "router_forward");
  const DeviceGuard guard(logits.device().index);
  const RouterParams p = router_params(scores, o);
  if (p.N == 0) return;
  const size_t shared = router_forward_shared_bytes(p.E, p.groups, kRouterThreads);
  const float* b = bias.defined() ? bias.data<float>() : nullptr;
  TITAN_MOE_LAUNCH(logits.dtype(), router_forward_kernel, unsigned(p.N), kRouterThreads, shared,
                   data_as<T>(logits), b, p, scores.mutable_data<float>(),
                   selected.mutable_data<int32_t>(), weights.mutable_data<float>());
}

void router_backward(const Tensor& dweights, const Tensor& scores, const Tensor& selected,
                     const RouterOptions& o, Tensor& dlogits) {
  check_router_backward(dweights, scores, selected, o, dlogits, kFloatDTypes);
  check_on_one_device({{&dweights, "dweights"}, {&scores, "scores"}, {&selected, "selected"},
                       {&dlogits, "dlogits"}},
                      "router_backward");
  const DeviceGuard guard(scores.device().index);
  const RouterParams p = router_params(scores, o);
  if (p.N == 0) return;
  const size_t shared = size_t(kRouterThreads) * sizeof(double) + size_t(p.E) * sizeof(float);
  TITAN_MOE_LAUNCH(dlogits.dtype(), router_backward_kernel, unsigned(p.N), kRouterThreads, shared,
                   dweights.data<float>(), scores.data<float>(), selected.data<int32_t>(), p,
                   mutable_data_as<T>(dlogits));
}

void moe_dispatch(const Tensor& x, const Tensor& order, int64_t K, const Tensor& weights,
                  Tensor& xs) {
  const auto [M, D] = check_moe_dispatch(x, order, K, weights, xs, kFloatDTypes);
  check_on_one_device({{&x, "x"}, {&order, "order"}, {&xs, "xs"}}, "moe_dispatch");
  if (weights.defined()) check_on_one_device({{&x, "x"}, {&weights, "weights"}}, "moe_dispatch");
  const DeviceGuard guard(x.device().index);
  if (M == 0) return;
  TITAN_MOE_LAUNCH(x.dtype(), dispatch_kernel, grid_for(M * D, kThreads), kThreads, 0,
                   data_as<T>(x), order.data<int32_t>(), K, weights_or_null(weights),
                   mutable_data_as<T>(xs), M, D);
}

void moe_dispatch_backward(const Tensor& dxs, const Tensor& x, const Tensor& order, int64_t K,
                           const Tensor& weights, Tensor& dx, Tensor& dweights) {
  const auto [M, D] =
      check_moe_dispatch_backward(dxs, x, order, K, weights, dx, dweights, kFloatDTypes);
  check_on_one_device({{&dxs, "dxs"}, {&x, "x"}, {&order, "order"}, {&dx, "dx"}},
                      "moe_dispatch_backward");
  if (weights.defined()) {
    check_on_one_device({{&dxs, "dxs"}, {&weights, "weights"}, {&dweights, "dweights"}},
                        "moe_dispatch_backward");
  }
  const DeviceGuard guard(dxs.device().index);
  if (M == 0) return;
  const int64_t N = M / K;
  if (weights.defined()) {
    TITAN_MOE_LAUNCH(dxs.dtype(), pick_dot_kernel, unsigned(M), kThreads,
                     kThreads * sizeof(double), data_as<T>(dxs), data_as<T>(x),
                     order.data<int32_t>(), K, D, dweights.mutable_data<float>());
  }
  const Tensor rows = rows_by_token(order, M);
  TITAN_MOE_LAUNCH(dxs.dtype(), gather_sum_kernel, unsigned(N), kThreads, K * sizeof(int32_t),
                   data_as<T>(dxs), rows.data<int32_t>(), order.data<int32_t>(), K,
                   weights_or_null(weights), mutable_data_as<T>(dx), D, true);
}

void moe_combine(const Tensor& ys, const Tensor& order, int64_t K, const Tensor& weights,
                 Tensor& out) {
  const auto [M, D] = check_moe_combine(ys, order, K, weights, out, kFloatDTypes);
  check_on_one_device({{&ys, "ys"}, {&order, "order"}, {&out, "out"}}, "moe_combine");
  if (weights.defined()) check_on_one_device({{&ys, "ys"}, {&weights, "weights"}}, "moe_combine");
  const DeviceGuard guard(ys.device().index);
  if (M == 0) return;
  const Tensor rows = rows_by_token(order, M);
  TITAN_MOE_LAUNCH(ys.dtype(), gather_sum_kernel, unsigned(M / K), kThreads, K * sizeof(int32_t),
                   data_as<T>(ys), rows.data<int32_t>(), order.data<int32_t>(), K,
                   weights_or_null(weights), mutable_data_as<T>(out), D, false);
}

void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& order, int64_t K,
                          const Tensor& weights, Tensor& dys, Tensor& dweights) {
  const auto [M, D] =
      check_moe_combine_backward(dout, ys, order, K, weights, dys, dweights, kFloatDTypes);
  check_on_one_device({{&dout, "dout"}, {&ys, "ys"}, {&order, "order"}, {&dys, "dys"}},
                      "moe_combine_backward");
  if (weights.defined()) {
    check_on_one_device({{&dout, "dout"}, {&weights, "weights"}, {&dweights, "dweights"}},
                        "moe_combine_backward");
  }
  const DeviceGuard guard(dout.device().index);
  if (M == 0) return;
  if (weights.defined()) {
    TITAN_MOE_LAUNCH(dout.dtype(), pick_dot_kernel, unsigned(M), kThreads,
                     kThreads * sizeof(double), data_as<T>(ys), data_as<T>(dout),
                     order.data<int32_t>(), K, D, dweights.mutable_data<float>());
  }
  TITAN_MOE_LAUNCH(dout.dtype(), dispatch_kernel, grid_for(M * D, kThreads), kThreads, 0,
                   data_as<T>(dout), order.data<int32_t>(), K, weights_or_null(weights),
                   mutable_data_as<T>(dys), M, D);
}

}  // namespace titan::ops::cuda

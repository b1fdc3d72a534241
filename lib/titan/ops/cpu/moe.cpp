// Mixture-of-experts routing and token movement on the CPU: tokens split over threads. A
// token's row adds its picks in the order of the sorted rows (ascending m), found through
// the inverse of `order`, whatever the thread count. bf16 tensors run on f32 copies
// (ops/cpu/bf16_storage.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/moe.h"
#include "titan/ops/moe_choice.h"

namespace titan::ops::cpu {

void router_forward(const Tensor& logits, const Tensor& bias, const RouterOptions& o,
                    Tensor& scores, Tensor& selected, Tensor& weights) {
  check_router(logits, bias, o, scores, selected, weights, kFloatDTypes);
  if (any_bf16({&logits, &bias, &scores, &weights})) {
    F32Output scores32(scores, false), weights32(weights, false);
    cpu::router_forward(*F32Input(logits), *F32Input(bias), o, *scores32, selected, *weights32);
    scores32.store();
    return weights32.store();
  }
  const int64_t N = logits.size(0), E = logits.size(1), K = o.top_k;
  const float* lp = logits.data<float>();
  const float* bp = bias.defined() ? bias.data<float>() : nullptr;
  float* sp = scores.mutable_data<float>();
  int32_t* selp = selected.mutable_data<int32_t>();
  float* wp = weights.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(N * E))
  for (int64_t n = 0; n < N; ++n) {
    const float* l = lp + n * E;
    float* s = sp + n * E;
    if (o.score == RouterScore::Sigmoid) {
      for (int64_t e = 0; e < E; ++e) s[e] = 1.0f / (1.0f + std::exp(-l[e]));
    } else {
      const float m = *std::max_element(l, l + E);
      float sum = 0.0f;
      for (int64_t e = 0; e < E; ++e) sum += (s[e] = std::exp(l[e] - m));
      for (int64_t e = 0; e < E; ++e) s[e] /= sum;
    }
    std::vector<float> c(s, s + E);
    std::vector<char> kept(static_cast<size_t>(E)), group_kept(static_cast<size_t>(o.groups));
    if (bp) {
      for (int64_t e = 0; e < E; ++e) c[size_t(e)] += bp[e];
    }
    int32_t* sel = selp + n * K;
    if (o.force_balance) {
      for (int64_t k = 0; k < K; ++k) sel[k] = int32_t((n * K + k) % E);
    } else {
      choose_experts(c.data(), E, o.groups, o.limited_groups, K, kept.data(),
                     group_kept.data(), sel);
    }
    float* w = wp + n * K;
    float total = 0.0f;
    for (int64_t k = 0; k < K; ++k) total += (w[k] = s[sel[k]]);
    for (int64_t k = 0; k < K; ++k) {
      w[k] = (o.route_norm ? w[k] / (total + 1e-20f) : w[k]) * o.route_scale;
    }
  }
}

void router_backward(const Tensor& dweights, const Tensor& scores, const Tensor& selected,
                     const RouterOptions& o, Tensor& dlogits) {
  check_router_backward(dweights, scores, selected, o, dlogits, kFloatDTypes);
  if (any_bf16({&dweights, &scores, &dlogits})) {
    F32Output dlogits32(dlogits, false);
    cpu::router_backward(*F32Input(dweights), *F32Input(scores), selected, o, *dlogits32);
    return dlogits32.store();
  }
  const int64_t N = scores.size(0), E = scores.size(1), K = o.top_k;
  const float* dwp = dweights.data<float>();
  const float* sp = scores.data<float>();
  const int32_t* selp = selected.data<int32_t>();
  float* dlp = dlogits.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(N * E))
  for (int64_t n = 0; n < N; ++n) {
    const float* s = sp + n * E;
    const int32_t* sel = selp + n * K;
    const float* dw = dwp + n * K;
    std::vector<float> ds(size_t(E), 0.0f);
    if (o.route_norm) {
      // w_k = scale t_k / S, S = sum t + 1e-20: dt_j = scale (dw_j - sum_k dw_k t_k / S) / S
      float total = 0.0f, weighted = 0.0f;
      for (int64_t k = 0; k < K; ++k) total += s[sel[k]];
      total += 1e-20f;
      for (int64_t k = 0; k < K; ++k) weighted += dw[k] * s[sel[k]];
      for (int64_t k = 0; k < K; ++k) {
        ds[size_t(sel[k])] = o.route_scale * (dw[k] - weighted / total) / total;
      }
    } else {
      for (int64_t k = 0; k < K; ++k) ds[size_t(sel[k])] = o.route_scale * dw[k];
    }
    float* dl = dlp + n * E;
    if (o.score == RouterScore::Sigmoid) {
      for (int64_t e = 0; e < E; ++e) dl[e] = ds[size_t(e)] * s[e] * (1.0f - s[e]);
    } else {
      float dot = 0.0f;
      for (int64_t e = 0; e < E; ++e) dot += ds[size_t(e)] * s[e];
      for (int64_t e = 0; e < E; ++e) dl[e] = s[e] * (ds[size_t(e)] - dot);
    }
  }
}

namespace {

// Each token's K sorted rows in ascending order: rows[n K + j], from the inverse of order.
std::vector<int32_t> rows_by_token(const int32_t* order, int64_t M, int64_t K) {
  std::vector<int32_t> rows(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) rows[size_t(order[m])] = int32_t(m);
  for (int64_t n = 0; n < M / K; ++n) std::sort(rows.begin() + n * K, rows.begin() + (n + 1) * K);
  return rows;
}

}  // namespace

void moe_dispatch(const Tensor& x, const Tensor& order, int64_t K, const Tensor& weights,
                  Tensor& xs) {
  const auto [M, D] = check_moe_dispatch(x, order, K, weights, xs, kFloatDTypes);
  if (any_bf16({&x, &weights, &xs})) {
    F32Output xs32(xs, false);
    cpu::moe_dispatch(*F32Input(x), order, K, *F32Input(weights), *xs32);
    return xs32.store();
  }
  const float* xp = x.data<float>();
  const int32_t* op = order.data<int32_t>();
  const float* wp = weights.defined() ? weights.data<float>() : nullptr;
  float* out = xs.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(M * D))
  for (int64_t m = 0; m < M; ++m) {
    const float* from = xp + int64_t(op[m] / K) * D;
    float* to = out + m * D;
    const float w = wp ? wp[op[m]] : 1.0f;
    for (int64_t d = 0; d < D; ++d) to[d] = wp ? from[d] * w : from[d];
  }
}

void moe_dispatch_backward(const Tensor& dxs, const Tensor& x, const Tensor& order, int64_t K,
                           const Tensor& weights, Tensor& dx, Tensor& dweights) {
  const auto [M, D] =
      check_moe_dispatch_backward(dxs, x, order, K, weights, dx, dweights, kFloatDTypes);
  if (any_bf16({&dxs, &x, &weights, &dx, &dweights})) {
    F32Output dx32(dx, false), dweights32(dweights, false);
    cpu::moe_dispatch_backward(*F32Input(dxs), *F32Input(x), order, K, *F32Input(weights), *dx32,
                               *dweights32);
    dx32.store();
    return dweights32.store();
  }
  const float* gp = dxs.data<float>();
  const float* xp = x.data<float>();
  const int32_t* op = order.data<int32_t>();
  const float* wp = weights.defined() ? weights.data<float>() : nullptr;
  float* dxp = dx.mutable_data<float>();
  std::fill(dxp, dxp + dx.numel(), 0.0f);
  if (wp) {
    float* dwp = dweights.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(M * D))
    for (int64_t m = 0; m < M; ++m) {
      const float* g = gp + m * D;
      const float* xr = xp + int64_t(op[m] / K) * D;
      float dot = 0.0f;
      for (int64_t d = 0; d < D; ++d) dot += g[d] * xr[d];
      dwp[op[m]] = dot;
    }
  }
  const std::vector<int32_t> rows = rows_by_token(op, M, K);
#pragma omp parallel for schedule(static) if (worth_threads(M * D))
  for (int64_t n = 0; n < M / K; ++n) {
    float* to = dxp + n * D;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t m = rows[size_t(n * K + j)];
      const float* g = gp + m * D;
      const float w = wp ? wp[op[m]] : 1.0f;
      for (int64_t d = 0; d < D; ++d) to[d] += wp ? g[d] * w : g[d];
    }
  }
}

void moe_combine(const Tensor& ys, const Tensor& order, int64_t K, const Tensor& weights,
                 Tensor& out) {
  const auto [M, D] = check_moe_combine(ys, order, K, weights, out, kFloatDTypes);
  if (any_bf16({&ys, &weights, &out})) {
    F32Output out32(out, true);
    cpu::moe_combine(*F32Input(ys), order, K, *F32Input(weights), *out32);
    return out32.store();
  }
  const float* yp = ys.data<float>();
  const int32_t* op = order.data<int32_t>();
  const float* wp = weights.defined() ? weights.data<float>() : nullptr;
  float* outp = out.mutable_data<float>();
  const std::vector<int32_t> rows = rows_by_token(op, M, K);
#pragma omp parallel for schedule(static) if (worth_threads(M * D))
  for (int64_t n = 0; n < M / K; ++n) {
    float* to = outp + n * D;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t m = rows[size_t(n * K + j)];
      const float* y = yp + m * D;
      const float w = wp ? wp[op[m]] : 1.0f;
      for (int64_t d = 0; d < D; ++d) to[d] += wp ? y[d] * w : y[d];
    }
  }
}

void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& order, int64_t K,
                          const Tensor& weights, Tensor& dys, Tensor& dweights) {
  const auto [M, D] =
      check_moe_combine_backward(dout, ys, order, K, weights, dys, dweights, kFloatDTypes);
  if (any_bf16({&dout, &ys, &weights, &dys, &dweights})) {
    F32Output dys32(dys, false), dweights32(dweights, false);
    cpu::moe_combine_backward(*F32Input(dout), *F32Input(ys), order, K, *F32Input(weights),
                              *dys32, *dweights32);
    dys32.store();
    return dweights32.store();
  }
  const float* gp = dout.data<float>();
  const float* yp = ys.data<float>();
  const int32_t* op = order.data<int32_t>();
  const float* wp = weights.defined() ? weights.data<float>() : nullptr;
  float* dyp = dys.mutable_data<float>();
  float* dwp = wp ? dweights.mutable_data<float>() : nullptr;
#pragma omp parallel for schedule(static) if (worth_threads(M * D))
  for (int64_t m = 0; m < M; ++m) {
    const float* g = gp + int64_t(op[m] / K) * D;
    float* to = dyp + m * D;
    if (!wp) {
      std::copy(g, g + D, to);
      continue;
    }
    const float* y = yp + m * D;
    const float w = wp[op[m]];
    float dot = 0.0f;
    for (int64_t d = 0; d < D; ++d) {
      dot += g[d] * y[d];
      to[d] = g[d] * w;
    }
    dwp[op[m]] = dot;
  }
}

}  // namespace titan::ops::cpu

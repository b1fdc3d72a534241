// bench_moe_experts: the routed experts of DeepSeek V3's MoE layer (nn/moe.h, ops/moe.h),
// forward + backward, three ways on the same inputs, beside the machine's sgemm rate
// measured in the same run with the same threads:
//
//   grouped  titan.cpp's path, the calls nn::Moe makes for its routed experts (here on the
//            ops directly, with the router's output made once outside the timing):
//            sort_picks, moe_dispatch, grouped_linear_forward w1 and w3, swiglu_forward,
//            grouped_linear_forward w2, moe_combine (scaled by the routing weights);
//            moe_combine_backward, grouped_linear_backward_input w2, swiglu_backward,
//            grouped_linear_backward_input w1 and w3, moe_dispatch_backward, and
//            grouped_linear_backward_weight w2, w1, w3. The routing weights' gradient is
//            computed (as nn::Moe does); router_backward and the gate are not timed.
//   loop     torchtitan's for-loop path: for each expert, an index copy of the rows of x
//            that chose it (not pre-sorted), three ops::linear_forward on that block,
//            swiglu, and a scatter-add of the weighted rows into the output; the backward
//            the same way (gather of dout, linear_backward_input / _weight, scatter-add
//            into dx). Per-expert blocks are kept from forward to backward, as autograd does.
//   dense    one SwiGLU feed-forward of hidden K F over the N tokens (ops::linear_* on
//            [N, D] x [K F, D]): the same active FLOPs as the experts.
//
// The router's `selected` comes from ops::router_forward (softmax scores, top K, no groups,
// no route_norm: the 16B's and the debug model's settings) on uniform random logits, so the
// picks are near uniform over the experts. Before timing, grouped and loop are checked to
// give the same output, dx, routing weights' gradient and expert weight gradients (within
// 1e-5 relative to each tensor's largest element), and token 0's output against a
// double-precision evaluation; the dense FFN's y[0, 0] likewise.
//
// FLOPs, for every variant: the expert GEMMs, per pick row 3 GEMMs (w1, w3: D -> F; w2:
// F -> D) of 2 D F each, x 3 for forward, grad input and grad weight (9 GEMMs):
//   18 D F M,  M = N K picked rows     (dense: 18 D (K F) N, the same number)
// The swiglu, the token movement and the routing weights' gradient are not counted, so
// "vs sgemm" is the fraction of the BLAS rate (sgemm 1024^3, measured once a round, the
// best kept) the whole forward + backward achieves on the GEMM work. "speedup" is the
// peer's time over the grouped path's time (above 1: the grouped path is faster).
// Three more lines take the grouped path apart: its 9 GEMMs alone (grouped_linear_* on
// stand-in rows), and each path's token movement alone (grouped: sort_picks, moe_dispatch,
// moe_combine and their backwards; loop: the per-expert index copies, scatter-adds and
// their backwards): the copies the GEMMs do not do.
// Times are the best of R rounds (5 R for the debug layer, whose rounds take under a
// second); a round runs every variant in turn, after the checks' run (or one call) of each
// has warmed it up.
//
//   usage: bench_moe_experts [--repeat R] [--large-tokens N]   (R 3, N 1024)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "titan/core/philox.h"
#include "titan/core/tensor.h"
#include "titan/core/threads.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/matmul.h"
#include "titan/ops/moe.h"
#include "titan/ops/swiglu.h"

using namespace titan;

namespace {

struct LayerShape {
  const char* name;
  int64_t D, F, E, K, N;
};

// Uniform of the given std (3.5x faster to draw than normal: the 16B slice's experts are
// 550M numbers).
Tensor random(const Shape& shape, const std::string& name, float std) {
  Tensor t = Tensor::empty(shape, DType::F32);
  const float a = std * std::sqrt(3.0f);
  philox_fill_uniform(t, 1234, philox_stream_key(name), 0, -a, a);
  return t;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "bench_moe_experts: check failed: %s\n", what.c_str());
  std::exit(1);
}

// Largest |a - b| over the largest |b|.
double relative_gap(const Tensor& a, const Tensor& b) {
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  double gap = 0, scale = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    gap = std::max(gap, std::fabs(double(x[i]) - double(y[i])));
    scale = std::max(scale, std::fabs(double(y[i])));
  }
  return gap / std::max(scale, 1e-30);
}

// Expert e's [rows, cols] matrix of a [E, rows, cols] weight.
Tensor expert_matrix(const Tensor& w, int64_t e) {
  return w.narrow(e, 1).reshape({w.size(1), w.size(2)});
}

// One MoE layer's inputs: the tokens, the upstream gradient, the experts and the routing.
struct Problem {
  LayerShape s;
  Tensor x, dout;          // [N, D]
  Tensor w1, w2, w3;       // [E, F, D], [E, D, F], [E, F, D]
  Tensor selected;         // [N, K] i32
  Tensor weights;          // [N K] f32 (the routing weights, flat by pick)
};

// What a forward + backward writes. The weight gradients accumulate (+=, as over
// microbatches); `shared` gives them another Result's storage.
struct Result {
  Tensor out, dx, dweights, dw1, dw2, dw3;
  explicit Result(const LayerShape& s, const Result* shared = nullptr)
      : out(Tensor::empty({s.N, s.D}, DType::F32)),
        dx(Tensor::empty({s.N, s.D}, DType::F32)),
        dweights(Tensor::empty({s.N * s.K}, DType::F32)),
        dw1(shared ? shared->dw1 : Tensor::zeros({s.E, s.F, s.D}, DType::F32)),
        dw2(shared ? shared->dw2 : Tensor::zeros({s.E, s.D, s.F}, DType::F32)),
        dw3(shared ? shared->dw3 : Tensor::zeros({s.E, s.F, s.D}, DType::F32)) {}
};

double max_abs(const Tensor& t) {
  const float* x = t.data<float>();
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(double(x[i])));
  return m;
}

Problem make_problem(const LayerShape& s) {
  Problem p{s, {}, {}, {}, {}, {}, {}, {}};
  const std::string tag = s.name;
  p.x = random({s.N, s.D}, tag + ".x", 1.0f);
  p.dout = random({s.N, s.D}, tag + ".dout", 1.0f);
  p.w1 = random({s.E, s.F, s.D}, tag + ".w1", 0.02f);
  p.w2 = random({s.E, s.D, s.F}, tag + ".w2", 0.02f);
  p.w3 = random({s.E, s.F, s.D}, tag + ".w3", 0.02f);
  const Tensor logits = random({s.N, s.E}, tag + ".logits", 1.0f);
  ops::RouterOptions options;
  options.score = ops::RouterScore::Softmax;
  options.top_k = s.K;
  Tensor scores = Tensor::empty({s.N, s.E}, DType::F32);
  p.selected = Tensor::empty({s.N, s.K}, DType::I32);
  Tensor weights = Tensor::empty({s.N, s.K}, DType::F32);
  ops::router_forward(logits, Tensor(), options, scores, p.selected, weights);
  p.weights = weights.reshape({s.N * s.K});
  return p;
}

// 1. titan.cpp's grouped GEMMs (nn::Moe's routed experts).
void grouped_step(const Problem& p, Result& r) {
  const int64_t D = p.s.D, F = p.s.F, E = p.s.E, K = p.s.K, M = p.s.N * K;
  Tensor order = Tensor::empty({M}, DType::I32);
  const std::vector<int64_t> offsets = ops::sort_picks(p.selected, E, order);
  // Forward.
  Tensor xs = Tensor::empty({M, D}, DType::F32);
  ops::moe_dispatch(p.x, order, K, Tensor(), xs);
  Tensor a = Tensor::empty({M, F}, DType::F32), b = Tensor::empty({M, F}, DType::F32);
  ops::grouped_linear_forward(xs, p.w1, offsets, a);
  ops::grouped_linear_forward(xs, p.w3, offsets, b);
  Tensor g = Tensor::empty({M, F}, DType::F32);
  ops::swiglu_forward(a, b, g);
  Tensor ys = Tensor::empty({M, D}, DType::F32);
  ops::grouped_linear_forward(g, p.w2, offsets, ys);
  ops::fill(r.out, 0.0f);
  ops::moe_combine(ys, order, K, p.weights, r.out);
  // Backward: inputs, then weights (nn::Moe's backward_input, backward_weight).
  Tensor dys = Tensor::empty({M, D}, DType::F32);
  ops::moe_combine_backward(p.dout, ys, order, K, p.weights, dys, r.dweights);
  Tensor dg = Tensor::empty({M, F}, DType::F32);
  ops::grouped_linear_backward_input(dys, p.w2, offsets, dg, ops::Accumulate::No);
  Tensor da = Tensor::empty({M, F}, DType::F32), db = Tensor::empty({M, F}, DType::F32);
  ops::swiglu_backward(dg, a, b, da, db);
  Tensor dxs = Tensor::empty({M, D}, DType::F32);
  ops::grouped_linear_backward_input(da, p.w1, offsets, dxs, ops::Accumulate::No);
  ops::grouped_linear_backward_input(db, p.w3, offsets, dxs, ops::Accumulate::Yes);
  Tensor unused;
  ops::moe_dispatch_backward(dxs, p.x, order, K, Tensor(), r.dx, unused);
  ops::grouped_linear_backward_weight(dys, g, offsets, r.dw2);
  ops::grouped_linear_backward_weight(da, xs, offsets, r.dw1);
  ops::grouped_linear_backward_weight(db, xs, offsets, r.dw3);
}

// The grouped path's token movement alone: dispatch, combine and their backwards on the
// same rows (the copies the GEMMs do not do).
void movement_step(const Problem& p, Result& r, Tensor& xs, const Tensor& ys, Tensor& dys) {
  const int64_t K = p.s.K, M = p.s.N * K;
  Tensor order = Tensor::empty({M}, DType::I32);
  ops::sort_picks(p.selected, p.s.E, order);
  ops::moe_dispatch(p.x, order, K, Tensor(), xs);
  ops::fill(r.out, 0.0f);
  ops::moe_combine(ys, order, K, p.weights, r.out);
  ops::moe_combine_backward(p.dout, ys, order, K, p.weights, dys, r.dweights);
  Tensor unused;
  ops::moe_dispatch_backward(xs, p.x, order, K, Tensor(), r.dx, unused);
}

// 2. The plain loop over experts (torchtitan's for-loop path). Its token movement, in
// helpers that the movement-only timing shares:
// each expert's picks (q = n K + k) in token order, from a scan of `selected`;
std::vector<std::vector<int32_t>> picks_by_expert(const Problem& p) {
  std::vector<std::vector<int32_t>> picks(static_cast<size_t>(p.s.E));
  const int32_t* sel = p.selected.data<int32_t>();
  for (int64_t q = 0; q < p.s.N * p.s.K; ++q) picks[size_t(sel[q])].push_back(int32_t(q));
  return picks;
}

// xe[i] = x[token of pick rows[i]] (an index copy);
void gather_rows(const Tensor& x, const std::vector<int32_t>& rows, int64_t K, Tensor& xe) {
  const int64_t n = int64_t(rows.size()), D = x.size(1);
  const float* xp = x.data<float>();
  float* to = xe.mutable_data<float>();
#pragma omp parallel for schedule(static) if (n * D > 65536)
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(to + i * D, xp + int64_t(rows[size_t(i)] / K) * D, size_t(D) * sizeof(float));
  }
}

// out[token of pick rows[i]] += ye[i] * weight (a token picks an expert once, so one
// expert's rows go to distinct tokens and the threads never share a row);
void scatter_add_rows(const Tensor& ye, const std::vector<int32_t>& rows, int64_t K,
                      const Tensor& weights, Tensor& out) {
  const int64_t n = int64_t(rows.size()), D = out.size(1);
  const float* yp = ye.data<float>();
  const float* wp = weights.defined() ? weights.data<float>() : nullptr;
  float* outp = out.mutable_data<float>();
#pragma omp parallel for schedule(static) if (n * D > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const int32_t q = rows[size_t(i)];
    float* to = outp + int64_t(q / K) * D;
    const float* from = yp + i * D;
    if (wp) {
      const float w = wp[q];
      for (int64_t d = 0; d < D; ++d) to[d] += from[d] * w;
    } else {
      for (int64_t d = 0; d < D; ++d) to[d] += from[d];
    }
  }
}

// dye[i] = dout[token] * weight and dweights[q] = dout[token] . ye[i] (the backward of the
// weighted scatter-add).
void gather_rows_backward(const Tensor& dout, const Tensor& ye, const std::vector<int32_t>& rows,
                          int64_t K, const Tensor& weights, Tensor& dye, Tensor& dweights) {
  const int64_t n = int64_t(rows.size()), D = dout.size(1);
  const float* gp = dout.data<float>();
  const float* yp = ye.data<float>();
  const float* wp = weights.data<float>();
  float* dyp = dye.mutable_data<float>();
  float* dwp = dweights.mutable_data<float>();
#pragma omp parallel for schedule(static) if (n * D > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const int32_t q = rows[size_t(i)];
    const float* g = gp + int64_t(q / K) * D;
    const float* y = yp + i * D;
    float* to = dyp + i * D;
    const float w = wp[q];
    float dot = 0.0f;
    for (int64_t d = 0; d < D; ++d) {
      dot += g[d] * y[d];
      to[d] = g[d] * w;
    }
    dwp[q] = dot;
  }
}

void loop_step(const Problem& p, Result& r) {
  const int64_t D = p.s.D, F = p.s.F, E = p.s.E, K = p.s.K;
  const std::vector<std::vector<int32_t>> picks = picks_by_expert(p);
  struct Block {
    Tensor xe, a, b, g, ye;
  };
  std::vector<Block> blocks(static_cast<size_t>(E));
  ops::fill(r.out, 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int32_t>& rows = picks[size_t(e)];
    const int64_t n = int64_t(rows.size());
    if (n == 0) continue;
    Block& bl = blocks[size_t(e)];
    bl.xe = Tensor::empty({n, D}, DType::F32);
    gather_rows(p.x, rows, K, bl.xe);
    bl.a = Tensor::empty({n, F}, DType::F32);
    bl.b = Tensor::empty({n, F}, DType::F32);
    ops::linear_forward(bl.xe, expert_matrix(p.w1, e), bl.a);
    ops::linear_forward(bl.xe, expert_matrix(p.w3, e), bl.b);
    bl.g = Tensor::empty({n, F}, DType::F32);
    ops::swiglu_forward(bl.a, bl.b, bl.g);
    bl.ye = Tensor::empty({n, D}, DType::F32);
    ops::linear_forward(bl.g, expert_matrix(p.w2, e), bl.ye);
    scatter_add_rows(bl.ye, rows, K, p.weights, r.out);
  }
  // Backward.
  ops::fill(r.dx, 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<int32_t>& rows = picks[size_t(e)];
    const int64_t n = int64_t(rows.size());
    if (n == 0) continue;
    Block& bl = blocks[size_t(e)];
    Tensor dye = Tensor::empty({n, D}, DType::F32);
    gather_rows_backward(p.dout, bl.ye, rows, K, p.weights, dye, r.dweights);
    Tensor dg = Tensor::empty({n, F}, DType::F32);
    const Tensor w1 = expert_matrix(p.w1, e), w2 = expert_matrix(p.w2, e);
    const Tensor w3 = expert_matrix(p.w3, e);
    Tensor dw1 = expert_matrix(r.dw1, e), dw2 = expert_matrix(r.dw2, e);
    Tensor dw3 = expert_matrix(r.dw3, e);
    ops::linear_backward_input(dye, w2, dg, ops::Accumulate::No);
    ops::linear_backward_weight(dye, bl.g, dw2);
    Tensor da = Tensor::empty({n, F}, DType::F32), db = Tensor::empty({n, F}, DType::F32);
    ops::swiglu_backward(dg, bl.a, bl.b, da, db);
    Tensor dxe = Tensor::empty({n, D}, DType::F32);
    ops::linear_backward_input(da, w1, dxe, ops::Accumulate::No);
    ops::linear_backward_input(db, w3, dxe, ops::Accumulate::Yes);
    ops::linear_backward_weight(da, bl.xe, dw1);
    ops::linear_backward_weight(db, bl.xe, dw3);
    scatter_add_rows(dxe, rows, K, Tensor(), r.dx);
    bl = Block{};
  }
}

// The loop's token movement alone: the same gathers and scatter-adds, on stand-in rows.
void loop_movement_step(const Problem& p, Result& r, const Tensor& ys) {
  const int64_t D = p.s.D, K = p.s.K;
  const std::vector<std::vector<int32_t>> picks = picks_by_expert(p);
  ops::fill(r.out, 0.0f);
  ops::fill(r.dx, 0.0f);
  for (const std::vector<int32_t>& rows : picks) {
    const int64_t n = int64_t(rows.size());
    if (n == 0) continue;
    Tensor xe = Tensor::empty({n, D}, DType::F32), dye = Tensor::empty({n, D}, DType::F32);
    const Tensor ye = ys.narrow(0, n);
    gather_rows(p.x, rows, K, xe);
    scatter_add_rows(ye, rows, K, p.weights, r.out);
    gather_rows_backward(p.dout, ye, rows, K, p.weights, dye, r.dweights);
    scatter_add_rows(xe, rows, K, Tensor(), r.dx);
  }
}

// 3. The dense SwiGLU feed-forward of hidden K F.
struct Dense {
  Tensor w1, w2, w3, dw1, dw2, dw3, y, dx;
};

Dense make_dense(const LayerShape& s) {
  const int64_t H = s.K * s.F;
  const std::string tag = std::string(s.name) + ".dense";
  return {random({H, s.D}, tag + ".w1", 0.02f), random({s.D, H}, tag + ".w2", 0.02f),
          random({H, s.D}, tag + ".w3", 0.02f),  Tensor::zeros({H, s.D}, DType::F32),
          Tensor::zeros({s.D, H}, DType::F32),   Tensor::zeros({H, s.D}, DType::F32),
          Tensor::empty({s.N, s.D}, DType::F32), Tensor::empty({s.N, s.D}, DType::F32)};
}

void dense_step(const Problem& p, Dense& f) {
  const int64_t N = p.s.N, H = p.s.K * p.s.F;
  Tensor a = Tensor::empty({N, H}, DType::F32), b = Tensor::empty({N, H}, DType::F32);
  ops::linear_forward(p.x, f.w1, a);
  ops::linear_forward(p.x, f.w3, b);
  Tensor g = Tensor::empty({N, H}, DType::F32);
  ops::swiglu_forward(a, b, g);
  ops::linear_forward(g, f.w2, f.y);
  Tensor dg = Tensor::empty({N, H}, DType::F32);
  ops::linear_backward_input(p.dout, f.w2, dg, ops::Accumulate::No);
  Tensor da = Tensor::empty({N, H}, DType::F32), db = Tensor::empty({N, H}, DType::F32);
  ops::swiglu_backward(dg, a, b, da, db);
  ops::linear_backward_input(da, f.w1, f.dx, ops::Accumulate::No);
  ops::linear_backward_input(db, f.w3, f.dx, ops::Accumulate::Yes);
  ops::linear_backward_weight(p.dout, g, f.dw2);
  ops::linear_backward_weight(da, p.x, f.dw1);
  ops::linear_backward_weight(db, p.x, f.dw3);
}

double silu(double v) { return v / (1.0 + std::exp(-v)); }

// Token 0's MoE output, in double.
std::vector<double> reference_token0(const Problem& p) {
  const int64_t D = p.s.D, F = p.s.F, K = p.s.K;
  const float* x = p.x.data<float>();
  std::vector<double> out(static_cast<size_t>(D), 0.0), h(static_cast<size_t>(F));
  for (int64_t k = 0; k < K; ++k) {
    const int64_t e = p.selected.data<int32_t>()[k];
    const float* w1 = p.w1.data<float>() + e * F * D;
    const float* w3 = p.w3.data<float>() + e * F * D;
    const float* w2 = p.w2.data<float>() + e * D * F;
    for (int64_t f = 0; f < F; ++f) {
      double a = 0, b = 0;
      for (int64_t d = 0; d < D; ++d) {
        a += double(w1[f * D + d]) * x[d];
        b += double(w3[f * D + d]) * x[d];
      }
      h[size_t(f)] = silu(a) * b;
    }
    for (int64_t d = 0; d < D; ++d) {
      double y = 0;
      for (int64_t f = 0; f < F; ++f) y += double(w2[d * F + f]) * h[size_t(f)];
      out[size_t(d)] += p.weights.data<float>()[k] * y;
    }
  }
  return out;
}

// The grouped path's nine GEMMs alone (grouped_linear_* on stand-in rows sorted by expert):
// what the layer would cost with no token movement, swiglu or allocation.
struct GemmRows {
  Tensor xs, h, dys;         // inputs [M, D], [M, F], [M, D]
  Tensor a, b, dg, ys, dxs;  // outputs
};

void grouped_gemms_step(const Problem& p, const std::vector<int64_t>& offsets, GemmRows& t,
                        Result& r) {
  ops::grouped_linear_forward(t.xs, p.w1, offsets, t.a);
  ops::grouped_linear_forward(t.xs, p.w3, offsets, t.b);
  ops::grouped_linear_forward(t.h, p.w2, offsets, t.ys);
  ops::grouped_linear_backward_input(t.dys, p.w2, offsets, t.dg, ops::Accumulate::No);
  ops::grouped_linear_backward_input(t.h, p.w1, offsets, t.dxs, ops::Accumulate::No);
  ops::grouped_linear_backward_input(t.h, p.w3, offsets, t.dxs, ops::Accumulate::Yes);
  ops::grouped_linear_backward_weight(t.dys, t.h, offsets, r.dw2);
  ops::grouped_linear_backward_weight(t.h, t.xs, offsets, r.dw1);
  ops::grouped_linear_backward_weight(t.h, t.xs, offsets, r.dw3);
}

double sgemm_rate = 0;  // the best measured so far

void bench_layer(const LayerShape& s, int repeat) {
  const int64_t M = s.N * s.K;
  std::printf("\n== %s: D %lld, F %lld, E %lld, top %lld, N %lld tokens (%lld picked rows)\n",
              s.name, (long long)s.D, (long long)s.F, (long long)s.E, (long long)s.K,
              (long long)s.N, (long long)M);
  const auto setup_start = std::chrono::steady_clock::now();
  const Problem p = make_problem(s);
  Tensor sorted_order = Tensor::empty({M}, DType::I32);
  const std::vector<int64_t> offsets = ops::sort_picks(p.selected, s.E, sorted_order);
  int64_t lo = M, hi = 0;
  for (int64_t e = 0; e < s.E; ++e) {
    lo = std::min(lo, offsets[size_t(e) + 1] - offsets[size_t(e)]);
    hi = std::max(hi, offsets[size_t(e) + 1] - offsets[size_t(e)]);
  }
  std::printf("rows per expert: mean %lld, min %lld, max %lld (router_forward, softmax, on "
              "random logits)\n",
              (long long)(M / s.E), (long long)lo, (long long)hi);

  // Check: grouped and loop agree, token 0 agrees with double precision. The loop adds its
  // weight gradients onto the grouped path's negated (one set of 3 E F D gradients, not
  // two): what remains is loop - grouped, exact where the two are within 2x of each other.
  Result grouped(s);
  Result loop(s, &grouped);
  const double made_s = seconds_since(setup_start);
  auto phase = std::chrono::steady_clock::now();
  grouped_step(p, grouped);
  const double first_grouped_s = seconds_since(phase);
  double worst = 0;
  auto expect_close = [&](double gap, const char* what) {
    check(gap <= 1e-5, std::string("grouped vs loop, ") + what + ": relative gap " +
                           std::to_string(gap));
    worst = std::max(worst, gap);
  };
  const char* weight_names[] = {"dw1", "dw2", "dw3"};
  Tensor* weight_grads[] = {&grouped.dw1, &grouped.dw2, &grouped.dw3};
  double weight_scale[3];
  for (int i = 0; i < 3; ++i) {
    weight_scale[i] = std::max(max_abs(*weight_grads[i]), 1e-30);
    ops::scale(*weight_grads[i], -1.0f);
  }
  phase = std::chrono::steady_clock::now();
  loop_step(p, loop);
  const double first_loop_s = seconds_since(phase);
  for (int i = 0; i < 3; ++i) {
    expect_close(max_abs(*weight_grads[i]) / weight_scale[i], weight_names[i]);
  }
  expect_close(relative_gap(loop.out, grouped.out), "out");
  expect_close(relative_gap(loop.dx, grouped.dx), "dx");
  expect_close(relative_gap(loop.dweights, grouped.dweights), "routing weights' gradient");
  const std::vector<double> ref = reference_token0(p);
  double ref_gap = 0, ref_scale = 0;
  for (int64_t d = 0; d < s.D; ++d) {
    ref_gap = std::max(ref_gap, std::fabs(grouped.out.data<float>()[d] - ref[size_t(d)]));
    ref_scale = std::max(ref_scale, std::fabs(ref[size_t(d)]));
  }
  check(ref_gap <= 1e-4 * ref_scale, "token 0 vs double: relative gap " +
                                         std::to_string(ref_gap / ref_scale));
  Dense dense = make_dense(s);
  dense_step(p, dense);
  {
    const int64_t H = s.K * s.F;
    std::vector<double> h(static_cast<size_t>(H));
    for (int64_t f = 0; f < H; ++f) {
      double a = 0, b = 0;
      for (int64_t d = 0; d < s.D; ++d) {
        a += double(dense.w1.data<float>()[f * s.D + d]) * p.x.data<float>()[d];
        b += double(dense.w3.data<float>()[f * s.D + d]) * p.x.data<float>()[d];
      }
      h[size_t(f)] = silu(a) * b;
    }
    double y = 0, scale = 0;
    for (int64_t f = 0; f < H; ++f) {
      y += double(dense.w2.data<float>()[f]) * h[size_t(f)];
      scale += std::fabs(double(dense.w2.data<float>()[f]) * h[size_t(f)]);
    }
    check(std::fabs(dense.y.data<float>()[0] - y) <= 1e-4 * std::max(scale, 1e-30),
          "dense y[0, 0] vs double");
  }
  std::printf("check: grouped = loop within %.1e relative (out, dx, routing weights' gradient, "
              "dw1, dw2, dw3; limit 1e-5); token 0 vs double %.1e; dense y[0,0] vs double ok\n",
              worst, ref_gap / ref_scale);

  // Time. The checks ran grouped, loop and dense once (their warm-up); the rest get one
  // warm-up call. Then `repeat` rounds of every variant in turn, and sgemm 1024^3 once a
  // round; best of each.
  const std::string tag = s.name;
  GemmRows rows{random({M, s.D}, tag + ".xs", 1.0f), random({M, s.F}, tag + ".h", 1.0f),
                random({M, s.D}, tag + ".dys", 1.0f), Tensor::empty({M, s.F}, DType::F32),
                Tensor::empty({M, s.F}, DType::F32),  Tensor::empty({M, s.F}, DType::F32),
                Tensor::empty({M, s.D}, DType::F32),  Tensor::empty({M, s.D}, DType::F32)};
  Tensor xs = Tensor::empty({M, s.D}, DType::F32), dys = Tensor::empty({M, s.D}, DType::F32);
  const std::function<void()> runs[] = {
      [&] { grouped_step(p, grouped); },
      [&] { loop_step(p, loop); },
      [&] { dense_step(p, dense); },
      [&] { grouped_gemms_step(p, offsets, rows, grouped); },
      [&] { movement_step(p, grouped, xs, rows.dys, dys); },
      [&] { loop_movement_step(p, loop, rows.dys); }};
  constexpr int kRuns = 6, kWarmed = 3;
  for (int v = kWarmed; v < kRuns; ++v) runs[v]();
  std::printf("setup, checks and warm-up: %.1f s (inputs %.1f, first grouped %.1f, first loop "
              "%.1f)\n",
              seconds_since(setup_start), made_s, first_grouped_s, first_loop_s);
  double best[kRuns];
  std::fill(best, best + kRuns, 1e30);
  for (int round = 0; round < repeat; ++round) {
    for (int v = 0; v < kRuns; ++v) {
      const auto t0 = std::chrono::steady_clock::now();
      runs[v]();
      best[v] = std::min(best[v], seconds_since(t0));
    }
    sgemm_rate = std::max(sgemm_rate, ops::measure_sgemm_gflops(1024));
  }

  const double flops = 18.0 * double(s.D) * double(s.F) * double(M);
  std::printf("expert GEMM FLOPs per forward + backward: %.3g (18 D F N K); sgemm 1024^3 "
              "(best so far): %.1f GFLOP/s\n",
              flops, sgemm_rate);
  std::printf("%-42s %9s %9s %8s %8s\n", "variant (fwd+bwd)", "ms", "GFLOP/s", "vs sgemm",
              "speedup");
  auto row = [&](const std::string& name, double t, bool with_speedup) {
    const double gf = flops / t / 1e9;
    std::printf("%-42s %9.2f %9.1f %8.2f", name.c_str(), t * 1e3, gf, gf / sgemm_rate);
    if (with_speedup) std::printf(" %7.2fx", t / best[0]);
    std::printf("\n");
  };
  row("grouped GEMM (titan.cpp, nn::Moe's path)", best[0], false);
  row("loop over experts (gather/scatter)", best[1], true);
  row("dense FFN, hidden K F = " + std::to_string(s.K * s.F), best[2], true);
  row("  grouped's 9 GEMMs alone", best[3], false);
  std::printf("%-42s %9.2f %9s (%.0f%% of its path)\n", "  grouped's token movement alone",
              best[4] * 1e3, "", 100.0 * best[4] / best[0]);
  std::printf("%-42s %9.2f %9s (%.0f%% of its path)\n", "  loop's token movement alone",
              best[5] * 1e3, "", 100.0 * best[5] / best[1]);
  std::printf("grouped / loop: %.2fx the speed; grouped / dense: %.2fx (the MoE takes %.2fx "
              "the dense FFN's time)\n",
              best[1] / best[0], best[2] / best[0], best[0] / best[2]);
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 3;
  int64_t large_tokens = 1024;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--large-tokens") == 0 && i + 1 < argc) {
      large_tokens = std::max<int64_t>(1, std::atoll(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_moe_experts [--repeat R] [--large-tokens N]\n");
      return 2;
    }
  }
  const int threads = configure_threads(1);
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  sgemm_rate = ops::measure_sgemm_gflops(1024);
  std::printf("threads %d, GEMMs %s, OpenBLAS core %s (OPENBLAS_CORETYPE=%s), sgemm 1024^3: "
              "%.1f GFLOP/s (measured again each round; the best is the reference)\n",
              threads, ops::cpu::gemm_library_name(), blas_core_name().c_str(),
              coretype ? coretype : "unset", sgemm_rate);
  if (const std::string warning = ops::cpu_gemm_warning(); !warning.empty()) {
    std::printf("warning: %s\n", warning.c_str());
  }
  std::printf("speedup = the peer's time / the grouped path's time; best of %d rounds (debug "
              "layer) and %d (16B slice)\n",
              5 * repeat, repeat);
  bench_layer({"debug model layer", 256, 256, 8, 3, 2048}, 5 * repeat);
  bench_layer({"16B-like slice", 2048, 1408, 64, 6, large_tokens}, repeat);
  return 0;
}

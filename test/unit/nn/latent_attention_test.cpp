// nn::LatentAttention, multi-head latent attention (nn/latent_attention.h): the forward
// against a float64 MLA written per batch row, head and query (causal softmax, RoPE as a
// complex rotation of pairs), and every gradient against central differences of it, with
// and without a query rank, v_head_dim below the query-key head dim (the padded values),
// and YaRN's table in one case.
#include "titan/nn/latent_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/core/error.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/rope.h"

namespace titan::nn {
namespace {

using testing::Values;

const InitRule kInit{InitKind::TruncatedNormal, 0.02, 0.04};

LatentAttentionDims small_dims(int64_t q_lora_rank) {
  LatentAttentionDims d;
  d.dim = 16;
  d.n_heads = 2;
  d.q_lora_rank = q_lora_rank;
  d.kv_lora_rank = 6;
  d.qk_nope_head_dim = 4;
  d.qk_rope_head_dim = 4;
  d.v_head_dim = 3;  // below nope + rope = 8: v is padded inside
  d.softmax_scale = 0.45f;  // not qk^-1/2, so a scale taken from elsewhere shows
  return d;
}

// y [rows, out] = a [rows, in] w^T, w [out, in].
Values matmul_t(const Values& a, const Values& w, int64_t rows, int64_t in, int64_t out) {
  Values y(static_cast<size_t>(rows * out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        y[size_t(r * out + o)] += a[size_t(r * in + i)] * w[size_t(o * in + i)];
      }
  return y;
}

Values rmsnorm(const Values& a, const Values& w, int64_t rows, int64_t dim, double eps) {
  Values y(a.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t i = 0; i < dim; ++i) ms += a[size_t(r * dim + i)] * a[size_t(r * dim + i)];
    const double rstd = 1 / std::sqrt(ms / double(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) {
      y[size_t(r * dim + i)] = a[size_t(r * dim + i)] * rstd * w[size_t(i)];
    }
  }
  return y;
}

// Rotates the pairs (2j, 2j + 1) of v[0, rope) by freqs[t, j] = (cos, sin), as complex numbers.
void rotate(double* v, int64_t rope, const Values& freqs, int64_t t) {
  for (int64_t j = 0; j < rope / 2; ++j) {
    const double c = freqs[size_t((t * (rope / 2) + j) * 2)];
    const double s = freqs[size_t((t * (rope / 2) + j) * 2 + 1)];
    const double x0 = v[2 * j], x1 = v[2 * j + 1];
    v[2 * j] = x0 * c - x1 * s;
    v[2 * j + 1] = x0 * s + x1 * c;
  }
}

// MLA in float64. in: x [B T, D], then the parameters in parameters()' order.
Values reference_mla(const LatentAttentionDims& d, int64_t B, int64_t T, const Values& freqs,
                     const std::vector<Values>& in) {
  const int64_t N = B * T, D = d.dim, H = d.n_heads, nope = d.qk_nope_head_dim;
  const int64_t rope = d.qk_rope_head_dim, qk = nope + rope, vd = d.v_head_dim;
  const int64_t kvl = d.kv_lora_rank, kv = nope + vd;
  const Values& x = in[0];
  size_t next = 1;
  Values q;
  if (d.q_lora_rank == 0) {
    q = matmul_t(x, in[next++], N, D, H * qk);
  } else {
    const int64_t r = d.q_lora_rank;
    const Values qa = matmul_t(x, in[next++], N, D, r);
    const Values qn = rmsnorm(qa, in[next++], N, r, d.norm_eps);
    q = matmul_t(qn, in[next++], N, r, H * qk);
  }
  const Values &wkv_a = in[next], &kv_norm = in[next + 1], &wkv_b = in[next + 2],
               &wo = in[next + 3];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h) rotate(&q[size_t((n * H + h) * qk + nope)], rope, freqs, n % T);
  const Values kva = matmul_t(x, wkv_a, N, D, kvl + rope);
  Values c(static_cast<size_t>(N * kvl)), k_pe(static_cast<size_t>(N * rope));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < kvl; ++i) c[size_t(n * kvl + i)] = kva[size_t(n * (kvl + rope) + i)];
    for (int64_t i = 0; i < rope; ++i) {
      k_pe[size_t(n * rope + i)] = kva[size_t(n * (kvl + rope) + kvl + i)];
    }
    rotate(&k_pe[size_t(n * rope)], rope, freqs, n % T);
  }
  const Values kvb = matmul_t(rmsnorm(c, kv_norm, N, kvl, d.norm_eps), wkv_b, N, kvl, H * kv);
  Values o(static_cast<size_t>(N * H * vd), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const double* qi = &q[size_t(((b * T + i) * H + h) * qk)];
        Values s(static_cast<size_t>(i + 1));
        for (int64_t j = 0; j <= i; ++j) {
          const double* kj = &kvb[size_t(((b * T + j) * H + h) * kv)];
          const double* pj = &k_pe[size_t((b * T + j) * rope)];
          double dot = 0;
          for (int64_t e = 0; e < nope; ++e) dot += qi[e] * kj[e];
          for (int64_t e = 0; e < rope; ++e) dot += qi[nope + e] * pj[e];
          s[size_t(j)] = d.softmax_scale * dot;
        }
        const double m = *std::max_element(s.begin(), s.end());
        double total = 0;
        for (double& v : s) total += (v = std::exp(v - m));
        double* oi = &o[size_t(((b * T + i) * H + h) * vd)];
        for (int64_t j = 0; j <= i; ++j) {
          const double* vj = &kvb[size_t(((b * T + j) * H + h) * kv + nope)];
          for (int64_t e = 0; e < vd; ++e) oi[e] += s[size_t(j)] / total * vj[e];
        }
      }
  return matmul_t(o, wo, N, H * vd, D);
}

struct Case {
  int64_t q_lora_rank;
  bool yarn;
};

Tensor rope_rows(const LatentAttentionDims& d, int64_t T, bool yarn) {
  Tensor freqs = Tensor::empty({T, d.qk_rope_head_dim / 2, 2}, DType::F32);
  if (yarn) {
    ops::YarnScaling s;
    s.enabled = true;
    s.factor = 4;
    s.original_seq_len = 3;  // below T
    ops::yarn_rope_table(d.qk_rope_head_dim, 50.0, s, 0, freqs);
  } else {
    ops::rope_table(d.qk_rope_head_dim, 50.0, ops::RopeScaling{.enabled = false}, 0, freqs);
  }
  return freqs;
}

void expect_mla_matches_reference(const Case& c) {
  const LatentAttentionDims dims = small_dims(c.q_lora_rank);
  const int64_t B = 2, T = 5, N = B * T, D = dims.dim;
  LatentAttention attention("attn", dims, kInit, kInit);
  std::vector<Values> inputs = {testing::random_values(N * D, 1)};
  std::vector<std::string> names = {"x"};
  uint64_t seed = 10;
  for (Parameter* p : attention.parameters()) {
    const bool norm = p->value().dim() == 1;
    Values v = testing::random_values(p->value().numel(), seed++, norm ? 0.3 : 0.5);
    if (norm) {
      for (double& w : v) w += 1;  // norm scales near 1, each its own
    }
    copy_tensor(testing::from_values(v, p->value().shape()), p->value());
    ops::fill(p->grad(), 0.0f);
    inputs.push_back(v);
    names.push_back(p->name());
  }
  SequenceLayout seq;
  seq.batch = B;
  seq.freqs = rope_rows(dims, T, c.yarn);
  const Values freqs = testing::to_values(seq.freqs);
  if (c.yarn) {  // the case must exercise YaRN: its table differs from the plain one
    EXPECT_NE(freqs, testing::to_values(rope_rows(dims, T, false)));
  }

  const Tensor x = testing::from_values(inputs[0], {N, D});
  Tensor y = Tensor::empty({N, D}, DType::F32);
  LatentAttentionRecord record;
  attention.forward(x, seq, y, record);
  const auto reference = [&](const std::vector<Values>& in) {
    return reference_mla(dims, B, T, freqs, in);
  };
  testing::expect_close(testing::to_values(y), reference(inputs), 1e-5, "y");

  const Values projection = testing::random_values(N * D, 2);
  const Tensor dy = testing::from_values(projection, {N, D});
  Tensor dx = testing::from_values(Values(size_t(N * D), 5.0), {N, D});  // (=) overwrites
  attention.backward_input(dy, seq, record, dx, ops::Accumulate::No);
  std::vector<Values> analytic = {testing::to_values(dx)};
  attention.backward_weight(record);
  for (Parameter* p : attention.parameters()) analytic.push_back(testing::to_values(p->grad()));
  testing::GradCheckOptions check;
  check.tolerance = 1e-4;
  check.max_samples = 1000;  // every element
  testing::expect_gradients_match(reference, inputs, projection, analytic, names, check);

  // Accumulate::Yes adds the same dx to what dx holds.
  attention.forward(x, seq, y, record);
  Tensor dx_sum = testing::from_values(Values(size_t(N * D), 1.0), {N, D});
  attention.backward_input(dy, seq, record, dx_sum, ops::Accumulate::Yes);
  Values want = analytic[0];
  for (double& v : want) v += 1;
  testing::expect_close(testing::to_values(dx_sum), want, 1e-6, "dx (+=)");
}

TEST(LatentAttention, QueryRankAndYarnMatchReferenceAndDifferences) {
  expect_mla_matches_reference({.q_lora_rank = 5, .yarn = true});
}

TEST(LatentAttention, OneQueryProjectionMatchesReferenceAndDifferences) {
  expect_mla_matches_reference({.q_lora_rank = 0, .yarn = false});
}

TEST(LatentAttention, ParametersInTorchtitansOrder) {
  const auto names_of = [](LatentAttention& a) {
    std::vector<std::string> names;
    for (Parameter* p : a.parameters()) {
      names.push_back(p->name() + " " + shape_string(p->global_shape()));
    }
    return names;
  };
  LatentAttention ranked("attn", small_dims(5), kInit, kInit);
  EXPECT_EQ(names_of(ranked),
            (std::vector<std::string>{"attn.wq_a.weight [5, 16]", "attn.q_norm.weight [5]",
                                      "attn.wq_b.weight [16, 5]", "attn.wkv_a.weight [10, 16]",
                                      "attn.kv_norm.weight [6]", "attn.wkv_b.weight [14, 6]",
                                      "attn.wo.weight [16, 6]"}));
  LatentAttention plain("attn", small_dims(0), kInit, kInit);
  EXPECT_EQ(names_of(plain),
            (std::vector<std::string>{"attn.wq.weight [16, 16]", "attn.wkv_a.weight [10, 16]",
                                      "attn.kv_norm.weight [6]", "attn.wkv_b.weight [14, 6]",
                                      "attn.wo.weight [16, 6]"}));
}

TEST(LatentAttention, RejectsValueHeadsWiderThanQueryKeyHeads) {
  LatentAttentionDims d = small_dims(0);
  d.v_head_dim = 9;  // nope + rope = 8
  EXPECT_THROW(LatentAttention("attn", d, kInit, kInit), Error);
}

}  // namespace
}  // namespace titan::nn

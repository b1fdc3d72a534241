#include "support/attention_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "titan/core/copy.h"

namespace titan::testing {
namespace {

double dot(const double* a, const double* b, int64_t n) {
  double sum = 0;
  for (int64_t e = 0; e < n; ++e) sum += a[e] * b[e];
  return sum;
}

struct Index {
  const AttentionDims64& d;
  int64_t q(int64_t b, int64_t i, int64_t h) const { return ((b * d.T + i) * d.Hq + h) * d.hd; }
  int64_t kv(int64_t b, int64_t j, int64_t g) const {
    return ((b * d.Tk + j) * d.Hkv + g) * d.hd;
  }
  int64_t row(int64_t b, int64_t h, int64_t i) const { return (b * d.Hq + h) * d.T + i; }
  int64_t group(int64_t h) const { return h / (d.Hq / d.Hkv); }
};

// p[j] = softmax weight of key j for one (b, h, i), 0 where masked; returns the lse.
double probabilities(const AttentionDims64& d, const AttentionMaskFn& mask, double scale,
                     const Values& q, const Values& k, int64_t b, int64_t h, int64_t i,
                     Values& p) {
  const Index at{d};
  double max = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < d.Tk; ++j) {
    p[size_t(j)] = -std::numeric_limits<double>::infinity();
    if (!mask(b, i, j)) continue;
    p[size_t(j)] = scale * dot(&q[size_t(at.q(b, i, h))], &k[size_t(at.kv(b, j, at.group(h)))],
                               d.hd);
    max = std::max(max, p[size_t(j)]);
  }
  if (max == -std::numeric_limits<double>::infinity()) {
    std::fill(p.begin(), p.end(), 0.0);
    return max;
  }
  double sum = 0;
  for (double& x : p) sum += (x = std::exp(x - max));
  for (double& x : p) x /= sum;
  return max + std::log(sum);
}

// An i32 tensor of x on `device` (undefined when x is empty).
Tensor i32_tensor(const std::vector<int32_t>& x, const Shape& shape, Device device) {
  if (x.empty()) return Tensor();
  Tensor t = Tensor::empty(shape, DType::I32);
  std::copy(x.begin(), x.end(), t.mutable_data<int32_t>());
  return device.is_cpu() ? t : to_device(t, device);
}

}  // namespace

ops::AttentionPositions AttentionLayout::tensors(int64_t B, int64_t T, int64_t Tk,
                                                 Device device) const {
  return {i32_tensor(q_position, {T}, device), i32_tensor(k_position, {Tk}, device),
          i32_tensor(q_document, {B, T}, device), i32_tensor(k_document, {B, Tk}, device)};
}

AttentionLayout layout_at_times(std::span<const int64_t> q_times,
                                std::span<const int64_t> k_times,
                                const std::vector<int32_t>& documents, int64_t B, int64_t T) {
  AttentionLayout layout;
  for (int64_t t : q_times) layout.q_position.push_back(int32_t(t));
  for (int64_t t : k_times) layout.k_position.push_back(int32_t(t));
  for (int64_t b = 0; !documents.empty() && b < B; ++b) {
    for (int64_t t : q_times) layout.q_document.push_back(documents[size_t(b * T + t)]);
    for (int64_t t : k_times) layout.k_document.push_back(documents[size_t(b * T + t)]);
  }
  return layout;
}

AttentionMaskFn reference_mask(const AttentionDims64& d, ops::AttentionMask mask,
                               const AttentionLayout& layout) {
  return [T = d.T, Tk = d.Tk, causal = mask == ops::AttentionMask::Causal,
          layout](int64_t b, int64_t i, int64_t j) {
    const int64_t qi = layout.q_position.empty() ? i : layout.q_position[size_t(i)];
    const int64_t kj = layout.k_position.empty() ? j : layout.k_position[size_t(j)];
    if (causal && kj > qi) return false;
    if (layout.q_document.empty()) return true;
    return layout.q_document[size_t(b * T + i)] == layout.k_document[size_t(b * Tk + j)];
  };
}

AttentionResult64 reference_masked_attention(const AttentionDims64& d, const AttentionMaskFn& mask,
                                             double scale, const Values& q, const Values& k,
                                             const Values& v) {
  const Index at{d};
  AttentionResult64 r;
  r.out.assign(size_t(d.B * d.T * d.Hq * d.hd), 0.0);
  r.lse.assign(size_t(d.B * d.Hq * d.T), 0.0);
  Values p(size_t(d.Tk));
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.Hq; ++h) {
      for (int64_t i = 0; i < d.T; ++i) {
        r.lse[size_t(at.row(b, h, i))] = probabilities(d, mask, scale, q, k, b, h, i, p);
        double* o = &r.out[size_t(at.q(b, i, h))];
        for (int64_t j = 0; j < d.Tk; ++j) {
          if (p[size_t(j)] == 0) continue;
          const double* vj = &v[size_t(at.kv(b, j, at.group(h)))];
          for (int64_t e = 0; e < d.hd; ++e) o[e] += p[size_t(j)] * vj[e];
        }
      }
    }
  }
  return r;
}

AttentionGrads64 reference_masked_attention_backward(const AttentionDims64& d,
                                                     const AttentionMaskFn& mask, double scale,
                                                     const Values& q, const Values& k,
                                                     const Values& v, const Values& dout) {
  const Index at{d};
  AttentionGrads64 g;
  g.dq.assign(q.size(), 0.0);
  g.dk.assign(k.size(), 0.0);
  g.dv.assign(v.size(), 0.0);
  Values p(size_t(d.Tk)), dp(size_t(d.Tk));
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t h = 0; h < d.Hq; ++h) {
      const int64_t grp = at.group(h);
      for (int64_t i = 0; i < d.T; ++i) {
        probabilities(d, mask, scale, q, k, b, h, i, p);
        const double* go = &dout[size_t(at.q(b, i, h))];
        double D = 0;  // sum_j p_j dp_j
        for (int64_t j = 0; j < d.Tk; ++j) {
          dp[size_t(j)] = dot(go, &v[size_t(at.kv(b, j, grp))], d.hd);
          D += p[size_t(j)] * dp[size_t(j)];
        }
        for (int64_t j = 0; j < d.Tk; ++j) {
          if (p[size_t(j)] == 0) continue;
          const double ds = p[size_t(j)] * (dp[size_t(j)] - D) * scale;
          const int64_t kj = at.kv(b, j, grp);
          for (int64_t e = 0; e < d.hd; ++e) {
            g.dv[size_t(kj + e)] += p[size_t(j)] * go[e];
            g.dq[size_t(at.q(b, i, h) + e)] += ds * k[size_t(kj + e)];
            g.dk[size_t(kj + e)] += ds * q[size_t(at.q(b, i, h) + e)];
          }
        }
      }
    }
  }
  return g;
}

std::vector<int32_t> documents_at_eos(const std::vector<int64_t>& tokens, int64_t B, int64_t T,
                                      int64_t eos) {
  std::vector<int32_t> documents(size_t(B * T));
  for (int64_t b = 0; b < B; ++b) {
    int32_t count = 0;
    for (int64_t t = 0; t < T; ++t) {
      documents[size_t(b * T + t)] = count;
      count += tokens[size_t(b * T + t)] == eos ? 1 : 0;
    }
  }
  return documents;
}

std::vector<int32_t> documents_of(const std::vector<std::vector<int64_t>>& lengths) {
  std::vector<int32_t> ids;
  for (const std::vector<int64_t>& row : lengths) {
    int32_t id = 0;
    for (int64_t n : row) ids.insert(ids.end(), size_t(n), id++);
  }
  return ids;
}

std::vector<int64_t> head_tail_times(int64_t T, int64_t cp, int64_t rank) {
  const int64_t chunk = T / (2 * cp);
  std::vector<int64_t> times;
  for (int64_t c : {rank, 2 * cp - 1 - rank}) {
    for (int64_t t = c * chunk; t < (c + 1) * chunk; ++t) times.push_back(t);
  }
  return times;
}

Values gather_time_btw(const Values& x, int64_t B, int64_t T, int64_t width,
                       std::span<const int64_t> times) {
  Values part;
  part.reserve(size_t(B) * times.size() * size_t(width));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t : times) {
      const auto first = x.begin() + (b * T + t) * width;
      part.insert(part.end(), first, first + width);
    }
  }
  return part;
}

Values gather_time_bht(const Values& x, int64_t B, int64_t H, int64_t T,
                       std::span<const int64_t> times) {
  Values part;
  part.reserve(size_t(B * H) * times.size());
  for (int64_t bh = 0; bh < B * H; ++bh) {
    for (int64_t t : times) part.push_back(x[size_t(bh * T + t)]);
  }
  return part;
}

}  // namespace titan::testing

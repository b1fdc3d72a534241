#include "titan/nn/context_parallel.h"

#include <algorithm>

#include "titan/core/copy.h"
#include "titan/core/error.h"

namespace titan::nn {
namespace {

// A run of consecutive global positions [first, first + length).
struct Run {
  int64_t first, length;
};

// Rank r's runs of a sequence of T, in order.
std::vector<Run> runs_of(const ContextParallel& cp, int64_t r, int64_t T) {
  const int64_t n = cp.size();
  if (cp.split() == SequenceSplit::Contiguous) {
    TITAN_CHECK(T % n == 0) << "context parallel: " << T << " tokens over " << n << " ranks";
    return {{r * (T / n), T / n}};
  }
  TITAN_CHECK(T % (2 * n) == 0) << "context parallel: " << T << " tokens over " << 2 * n
                                << " head-tail chunks";
  const int64_t chunk = T / (2 * n);
  return {{r * chunk, chunk}, {(2 * n - 1 - r) * chunk, chunk}};
}

class OneRank final : public ContextParallel {
 public:
  int64_t size() const override { return 1; }
  int64_t rank() const override { return 0; }
  SequenceSplit split() const override { return SequenceSplit::Contiguous; }
  void all_reduce_max(Tensor&) const override {}

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                         const SequenceLayout& seq, Tensor& out, Tensor& lse) const override {
    Tensor workspace = ops::attention_forward_workspace(q, k);
    ops::attention_forward(q, k, v, scale, ops::AttentionMask::Causal, out, lse, workspace,
                           seq.mask_against(0));
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, float scale,
                          const SequenceLayout& seq, Tensor& dq, Tensor& dk,
                          Tensor& dv) const override {
    Tensor workspace = ops::attention_backward_workspace(q, k);
    ops::attention_backward(dout, q, k, v, out, lse, scale, ops::AttentionMask::Causal, dq, dk,
                            dv, ops::Accumulate::No, workspace, seq.mask_against(0));
  }
};

// dst's rows [at, at + run.length) <- src's rows of the run (dim 0), any device.
void copy_run(const Tensor& src, const Run& run, Tensor& dst, int64_t at) {
  Tensor to = dst.narrow(at, run.length);
  copy_tensor(src.narrow(run.first, run.length), to);
}

// An i32 [n] host tensor of `values`, on `device`.
Tensor int32_tensor(const std::vector<int32_t>& values, Device device) {
  Tensor t = Tensor::empty({int64_t(values.size())}, DType::I32);
  std::copy(values.begin(), values.end(), t.mutable_data<int32_t>());
  return on_device(t, device);
}

}  // namespace

std::vector<int32_t> ContextParallel::positions_of(int64_t r, int64_t T) const {
  std::vector<int32_t> positions;
  for (const Run& run : runs_of(*this, r, T)) {
    for (int64_t t = run.first; t < run.first + run.length; ++t) positions.push_back(int32_t(t));
  }
  return positions;
}

const ContextParallel& no_context_parallel() {
  static const OneRank one_rank;
  return one_rank;
}

Tensor local_tokens(const ContextParallel& cp, const Tensor& tokens) {
  if (cp.size() == 1) return tokens;  // whatever its device and integer type
  TITAN_CHECK(tokens.dim() == 2 && tokens.device().is_cpu() && tokens.dtype() == DType::I64)
      << "local_tokens: takes a [B, T] i64 host tensor, got " << shape_string(tokens.shape())
      << " " << dtype_name(tokens.dtype()) << " on " << tokens.device();
  const int64_t B = tokens.size(0), T = tokens.size(1);
  const std::vector<int32_t> mine = cp.positions_of(cp.rank(), T);
  Tensor local = Tensor::empty({B, int64_t(mine.size())}, DType::I64);
  const int64_t* in = tokens.data<int64_t>();
  int64_t* out = local.mutable_data<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    for (size_t t = 0; t < mine.size(); ++t) *out++ = in[b * T + mine[t]];
  }
  return local;
}

SequenceLayout sequence_layout(const ContextParallel& cp, const Tensor& tokens,
                               const Tensor& freqs, std::optional<int32_t> document_end,
                               Device device) {
  TITAN_CHECK(tokens.dim() == 2) << "sequence_layout: takes [B, T] tokens, got "
                                 << shape_string(tokens.shape());
  const int64_t B = tokens.size(0), T = tokens.size(1), n = cp.size();
  TITAN_CHECK(freqs.size(0) >= T) << "sequence_layout: a RoPE table of " << freqs.size(0)
                                  << " rows for " << T << " positions";
  SequenceLayout seq;
  seq.batch = B;
  if (n == 1) {
    seq.freqs = freqs.narrow(0, T);
  } else {
    Shape shape = freqs.shape();
    shape[0] = T / n;
    seq.freqs = Tensor::empty(shape, freqs.dtype(), freqs.device());
    int64_t at = 0;
    for (const Run& run : runs_of(cp, cp.rank(), T)) {
      copy_run(freqs, run, seq.freqs, at);
      at += run.length;
    }
  }
  if (n == 1 && !document_end) return seq;  // the plain causal mask
  TITAN_CHECK(tokens.device().is_cpu() && tokens.dtype() == DType::I64)
      << "sequence_layout: documents and chunks are found in i64 host tokens";

  std::vector<Tensor> positions(static_cast<size_t>(n)), documents(static_cast<size_t>(n));
  if (document_end) {
    // The document of token t: the EOS count before it, per row of the whole sequence.
    std::vector<int32_t> document(size_t(B * T));
    const int64_t* in = tokens.data<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      int32_t count = 0;
      for (int64_t t = 0; t < T; ++t) {
        document[size_t(b * T + t)] = count;
        count += in[b * T + t] == *document_end ? 1 : 0;
      }
    }
    for (int64_t r = 0; r < n; ++r) {
      const std::vector<int32_t> mine = cp.positions_of(r, T);
      std::vector<int32_t> rows;
      rows.reserve(size_t(B) * mine.size());
      for (int64_t b = 0; b < B; ++b) {
        for (const int32_t t : mine) rows.push_back(document[size_t(b * T + t)]);
      }
      documents[size_t(r)] = int32_tensor(rows, device).reshape({B, int64_t(mine.size())});
    }
  }
  if (n > 1) {
    for (int64_t r = 0; r < n; ++r) {
      positions[size_t(r)] = int32_tensor(cp.positions_of(r, T), device);
    }
  }
  const size_t me = size_t(cp.rank());
  for (size_t owner = 0; owner < size_t(n); ++owner) {
    seq.masks.push_back({positions[me], positions[owner], documents[me], documents[owner]});
  }
  return seq;
}

}  // namespace titan::nn

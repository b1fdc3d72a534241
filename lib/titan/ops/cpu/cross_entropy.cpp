// Cross-entropy on the CPU. Each chunk of C tokens is one cblas GEMM into the workspace
// (OpenBLAS threads; never inside an OpenMP region), then OpenMP rows over the chunk for
// the softmax arithmetic, then, in the backward, the workspace turns into dlogits in
// place and feeds the dh and dweight GEMMs. Exponentials are float (as torch's CPU
// kernel); each row's sum of exponentials and the loss are double. The loss is summed
// row by row in token order, so it does not depend on the thread count or the chunk size.
#include <cmath>
#include <limits>

#include "titan/ops/cross_entropy.h"
#include "titan/ops/matmul.h"

namespace titan::ops {

int64_t cross_entropy_valid_tokens(const Tensor& labels) {
  TITAN_CHECK(labels.device().is_cpu()) << "cross_entropy_valid_tokens: labels on "
                                        << labels.device() << ", expected host labels";
  int64_t valid = 0;
  for (int64_t n = 0; n < labels.numel(); ++n) {
    const int64_t label = labels.dtype() == DType::I32 ? labels.data<int32_t>()[n]
                                                       : labels.data<int64_t>()[n];
    valid += label != kIgnoreIndex;
  }
  return valid;
}

namespace cpu {
namespace {

// Labels come as i32 (token shards) or i64 (torch's dtype); read either as int64.
struct LabelReader {
  const int32_t* i32 = nullptr;
  const int64_t* i64 = nullptr;
  int64_t operator[](int64_t n) const { return i32 != nullptr ? int64_t(i32[n]) : i64[n]; }
};

// Checks labels [N] and that each is a vocabulary index or kIgnoreIndex: an id outside
// the vocabulary would read past a logits row.
LabelReader check_labels(const Tensor& labels, int64_t tokens, int64_t vocab, const char* op) {
  TITAN_CHECK(labels.defined()) << op << ": labels is undefined";
  TITAN_CHECK(labels.dtype() == DType::I32 || labels.dtype() == DType::I64)
      << op << ": labels is " << dtype_name(labels.dtype()) << ", expected i32 or i64";
  check_shape(labels, {tokens}, op, "labels");
  LabelReader reader;
  if (labels.dtype() == DType::I32) {
    reader.i32 = labels.data<int32_t>();
  } else {
    reader.i64 = labels.data<int64_t>();
  }
  for (int64_t n = 0; n < tokens; ++n) {
    const int64_t label = reader[n];
    TITAN_CHECK((label >= 0 && label < vocab) || label == kIgnoreIndex)
        << op << ": label " << label << " of token " << n << " is outside the vocabulary [0, "
        << vocab << ") and is not the ignore index " << kIgnoreIndex;
  }
  return reader;
}

// The shapes every fused call shares; returns {N, D, V}.
struct Dims {
  int64_t tokens, dim, vocab;
};
Dims check_fused(const Tensor& h, const Tensor& weight, const Tensor& workspace, const char* op) {
  check_dtype(h, DType::F32, op, "h");
  check_dtype(weight, DType::F32, op, "weight");
  check_dtype(workspace, DType::F32, op, "workspace");
  TITAN_CHECK(h.dim() == 2) << op << ": h must be [N, D], got " << shape_string(h.shape());
  TITAN_CHECK(weight.dim() == 2 && weight.size(1) == h.size(1))
      << op << ": weight must be [V, D] with D = " << h.size(1) << ", got "
      << shape_string(weight.shape());
  const Dims d{h.size(0), h.size(1), weight.size(0)};
  TITAN_CHECK(d.vocab >= 1) << op << ": empty vocabulary";
  TITAN_CHECK(workspace.dim() == 2 && workspace.size(0) >= 1 && workspace.size(1) == d.vocab)
      << op << ": workspace must be [C, V] with C >= 1 and V = " << d.vocab << ", got "
      << shape_string(workspace.shape()) << " (see cross_entropy_workspace_shape)";
  return d;
}

// lse[r] = max + log(sum exp(logits[r, v] - max)) for each row of a chunk.
void rows_log_sum_exp(const float* logits, int64_t rows, int64_t vocab, float* lse) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * vocab;
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t v = 0; v < vocab; ++v) max = std::max(max, z[v]);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(z[v] - max);
    lse[r] = float(double(max) + std::log(sum));
  }
}

// sum over the chunk's valid rows of lse - logit[label], in token order.
double rows_loss(const float* logits, int64_t rows, int64_t vocab, const LabelReader& labels,
                 int64_t first, const float* lse) {
  double loss = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t label = labels[first + r];
    if (label == kIgnoreIndex) continue;
    loss += double(lse[r]) - double(logits[r * vocab + label]);
  }
  return loss;
}

// dlogits[r, v] = (exp(logits[r, v] - lse[r]) - [v == label]) * scale, = or +=; ignored
// rows get 0 (or keep their value). dlogits may be logits itself (the fused backward).
void rows_dlogits(const float* logits, int64_t rows, int64_t vocab, const LabelReader& labels,
                  int64_t first, const float* lse, float scale, float* dlogits, bool add) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * vocab;
    float* dz = dlogits + r * vocab;
    const int64_t label = labels[first + r];
    if (label == kIgnoreIndex) {
      if (!add) std::fill(dz, dz + vocab, 0.0f);
      continue;
    }
    const float row_lse = lse[r];
    for (int64_t v = 0; v < vocab; ++v) {
      const float g = std::exp(z[v] - row_lse) * scale;
      dz[v] = add ? dz[v] + g : g;
    }
    dz[label] -= scale;
  }
}

// The three backward entries: per chunk, recompute the logits, turn them into dlogits in
// place, then the dh GEMM and/or the dweight GEMM (a null output skips its GEMM).
void fused_backward(const Tensor& h, const Tensor& weight, const Tensor& labels, const Tensor& lse,
                    float grad_scale, Tensor* dh, Tensor* dweight, Accumulate accumulate_dh,
                    Tensor& workspace, const char* op) {
  const Dims d = check_fused(h, weight, workspace, op);
  const LabelReader label_reader = check_labels(labels, d.tokens, d.vocab, op);
  check_shape(lse, {d.tokens}, op, "lse");
  check_dtype(lse, DType::F32, op, "lse");
  if (dh != nullptr) {
    check_dtype(*dh, DType::F32, op, "dh");
    check_shape(*dh, h.shape(), op, "dh");
  }
  if (dweight != nullptr) {
    check_dtype(*dweight, DType::F32, op, "dweight");
    check_shape(*dweight, weight.shape(), op, "dweight");
  }
  const int64_t chunk = workspace.size(0);
  const float* lse_data = lse.data<float>();
  for (int64_t first = 0; first < d.tokens; first += chunk) {
    const int64_t rows = std::min(chunk, d.tokens - first);
    const Tensor h_chunk = h.narrow(first, rows);
    Tensor logits = workspace.narrow(0, rows);
    cpu::matmul(h_chunk, Transpose::No, weight, Transpose::Yes, logits, 1.0f, 0.0f);
    float* z = logits.mutable_data<float>();
    rows_dlogits(z, rows, d.vocab, label_reader, first, lse_data + first, grad_scale, z, false);
    if (dh != nullptr) {
      Tensor dh_chunk = dh->narrow(first, rows);
      cpu::matmul(logits, Transpose::No, weight, Transpose::No, dh_chunk, 1.0f,
                  accumulate_dh == Accumulate::Yes ? 1.0f : 0.0f);
    }
    if (dweight != nullptr) {
      cpu::matmul(logits, Transpose::Yes, h_chunk, Transpose::No, *dweight, 1.0f, 1.0f);
    }
  }
}

}  // namespace

void cross_entropy_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                           Tensor& loss_sum, Tensor& lse, Tensor& workspace) {
  const char* op = "cross_entropy_forward";
  const Dims d = check_fused(h, weight, workspace, op);
  const LabelReader label_reader = check_labels(labels, d.tokens, d.vocab, op);
  check_dtype(loss_sum, DType::F32, op, "loss_sum");
  check_shape(loss_sum, {1}, op, "loss_sum");
  check_dtype(lse, DType::F32, op, "lse");
  check_shape(lse, {d.tokens}, op, "lse");
  const int64_t chunk = workspace.size(0);
  float* lse_data = lse.mutable_data<float>();
  double loss = 0;
  for (int64_t first = 0; first < d.tokens; first += chunk) {
    const int64_t rows = std::min(chunk, d.tokens - first);
    Tensor logits = workspace.narrow(0, rows);
    cpu::matmul(h.narrow(first, rows), Transpose::No, weight, Transpose::Yes, logits, 1.0f,
                0.0f);
    const float* z = logits.data<float>();
    rows_log_sum_exp(z, rows, d.vocab, lse_data + first);
    loss += rows_loss(z, rows, d.vocab, label_reader, first, lse_data + first);
  }
  loss_sum.mutable_data<float>()[0] = float(loss);
}

void cross_entropy_backward_input(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  const Tensor& lse, float grad_scale, Tensor& dh,
                                  Accumulate accumulate, Tensor& workspace) {
  fused_backward(h, weight, labels, lse, grad_scale, &dh, nullptr, accumulate, workspace,
                 "cross_entropy_backward_input");
}

void cross_entropy_backward_weight(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                   const Tensor& lse, float grad_scale, Tensor& dweight,
                                   Tensor& workspace) {
  fused_backward(h, weight, labels, lse, grad_scale, nullptr, &dweight, Accumulate::Yes, workspace,
                 "cross_entropy_backward_weight");
}

void cross_entropy_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                            const Tensor& lse, float grad_scale, Tensor& dh, Tensor& dweight,
                            Accumulate accumulate_dh, Tensor& workspace) {
  fused_backward(h, weight, labels, lse, grad_scale, &dh, &dweight, accumulate_dh, workspace,
                 "cross_entropy_backward");
}

void cross_entropy_logits_forward(const Tensor& logits, const Tensor& labels, Tensor& loss_sum,
                                  Tensor& lse) {
  const char* op = "cross_entropy_logits_forward";
  check_dtype(logits, DType::F32, op, "logits");
  TITAN_CHECK(logits.dim() == 2 && logits.size(1) >= 1)
      << op << ": logits must be [N, V], got " << shape_string(logits.shape());
  const int64_t tokens = logits.size(0), vocab = logits.size(1);
  const LabelReader label_reader = check_labels(labels, tokens, vocab, op);
  check_dtype(loss_sum, DType::F32, op, "loss_sum");
  check_shape(loss_sum, {1}, op, "loss_sum");
  check_dtype(lse, DType::F32, op, "lse");
  check_shape(lse, {tokens}, op, "lse");
  float* lse_data = lse.mutable_data<float>();
  rows_log_sum_exp(logits.data<float>(), tokens, vocab, lse_data);
  loss_sum.mutable_data<float>()[0] =
      float(rows_loss(logits.data<float>(), tokens, vocab, label_reader, 0, lse_data));
}

void cross_entropy_logits_backward(const Tensor& logits, const Tensor& labels, const Tensor& lse,
                                   float grad_scale, Tensor& dlogits, Accumulate accumulate) {
  const char* op = "cross_entropy_logits_backward";
  check_dtype(logits, DType::F32, op, "logits");
  TITAN_CHECK(logits.dim() == 2 && logits.size(1) >= 1)
      << op << ": logits must be [N, V], got " << shape_string(logits.shape());
  const int64_t tokens = logits.size(0), vocab = logits.size(1);
  const LabelReader label_reader = check_labels(labels, tokens, vocab, op);
  check_dtype(lse, DType::F32, op, "lse");
  check_shape(lse, {tokens}, op, "lse");
  check_dtype(dlogits, DType::F32, op, "dlogits");
  check_shape(dlogits, logits.shape(), op, "dlogits");
  rows_dlogits(logits.data<float>(), tokens, vocab, label_reader, 0, lse.data<float>(), grad_scale,
               dlogits.mutable_data<float>(), accumulate == Accumulate::Yes);
}

}  // namespace cpu
}  // namespace titan::ops

// Cross-entropy on the CPU. Each chunk of C tokens is one cblas GEMM into the workspace
// (OpenBLAS threads; never inside an OpenMP region), then OpenMP rows over the chunk for
// the softmax arithmetic, then, in the backward, the workspace turns into dlogits in
// place and feeds the dh and dweight GEMMs. Exponentials are float, vectorized
// (ops/cpu/vector_math.h; torch's CPU kernel vectorizes its own too); each row's sum of
// exponentials and the loss are double. The loss is summed row by row in token order, so
// it does not depend on the thread count or the chunk size. bf16 h and weight: GEMMs on
// bf16 operands (ops/matmul.h) into f32 logits; bf16 logits run on f32 copies
// (ops/cpu/bf16_storage.h).
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "titan/core/float_formats.h"
#include "titan/core/threads.h"
#include "titan/ops/cast.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/cross_entropy.h"
#include "titan/ops/cpu/vector_math.h"
#include "titan/ops/matmul.h"

namespace titan::ops::cpu {
namespace {

// Labels come as i32 (token shards) or i64 (torch's dtype); read either as int64.
struct LabelReader {
  const int32_t* i32 = nullptr;
  const int64_t* i64 = nullptr;
  int64_t operator[](int64_t n) const { return i32 != nullptr ? int64_t(i32[n]) : i64[n]; }
};

// A reader of the labels, once each is checked to be a vocabulary index or kIgnoreIndex.
LabelReader read_labels(const Tensor& labels, int64_t vocab, const char* op) {
  LabelReader reader;
  if (labels.dtype() == DType::I32) {
    reader.i32 = labels.data<int32_t>();
  } else {
    reader.i64 = labels.data<int64_t>();
  }
  for (int64_t n = 0; n < labels.numel(); ++n) check_cross_entropy_label(reader[n], n, vocab, op);
  return reader;
}

// The row loops below are written to vectorize: the max as an OpenMP simd reduction
// (exact in any order), the exponentials with exp_bounded, the sum of exponentials in
// eight double lanes added in a fixed order (the same bits at any vector width).
float max_of(const float* z, int64_t vocab) {
  float max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max)
  for (int64_t v = 0; v < vocab; ++v) max = std::max(max, z[v]);
  return max;
}

// sum over v of exp(z[v] - shift), in double.
double sum_of_exp(const float* z, int64_t vocab, float shift) {
  double lanes[8] = {};
  int64_t v = 0;
  for (; v + 8 <= vocab; v += 8) {
    for (int c = 0; c < 8; ++c) lanes[c] += double(exp_bounded(z[v + c] - shift));
  }
  double sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
               ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; v < vocab; ++v) sum += double(exp_bounded(z[v] - shift));
  return sum;
}

// max + log(sum exp(z[v] - max)) of one row.
float row_log_sum_exp(const float* z, int64_t vocab) {
  const float max = max_of(z, vocab);
  return float(double(max) + std::log(sum_of_exp(z, vocab, max)));
}

// lse[r] for each row of a chunk.
void rows_log_sum_exp(const float* logits, int64_t rows, int64_t vocab, float* lse) {
#pragma omp parallel for schedule(static) if (worth_threads(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) lse[r] = row_log_sum_exp(logits + r * vocab, vocab);
}

// One token's loss: lse - its label's logit.
double token_loss(float lse, float label_logit) { return double(lse) - double(label_logit); }

// sum over the chunk's valid rows of lse - logit[label], in token order.
double rows_loss(const float* logits, int64_t rows, int64_t vocab, const LabelReader& labels,
                 int64_t first, const float* lse) {
  double loss = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t label = labels[first + r];
    if (label == kIgnoreIndex) continue;
    loss += token_loss(lse[r], logits[r * vocab + label]);
  }
  return loss;
}

// dz[v] = (exp(z[v] - lse) - [v == label]) * scale, = or +=, for one valid row (dz may be
// z itself). The columns are the slice of the vocabulary from id `vocab_first`: a label
// outside them has no one-hot entry here.
void row_dlogits(const float* z, int64_t vocab, int64_t label, float lse, float scale, float* dz,
                 bool add, int64_t vocab_first) {
  if (add) {
    for (int64_t v = 0; v < vocab; ++v) dz[v] += exp_bounded(z[v] - lse) * scale;
  } else {
    for (int64_t v = 0; v < vocab; ++v) dz[v] = exp_bounded(z[v] - lse) * scale;
  }
  const int64_t column = label - vocab_first;
  if (column >= 0 && column < vocab) dz[column] -= scale;
}

// row_dlogits for each row of a chunk; ignored rows get 0 (or keep their value).
void rows_dlogits(const float* logits, int64_t rows, int64_t vocab, const LabelReader& labels,
                  int64_t first, const float* lse, float scale, float* dlogits, bool add,
                  int64_t vocab_first = 0) {
#pragma omp parallel for schedule(static) if (worth_threads(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) {
    float* dz = dlogits + r * vocab;
    const int64_t label = labels[first + r];
    if (label == kIgnoreIndex) {
      if (!add) std::fill(dz, dz + vocab, 0.0f);
      continue;
    }
    row_dlogits(logits + r * vocab, vocab, label, lse[r], scale, dz, add, vocab_first);
  }
}

// The forward + backward's pass over a chunk, each row while it is in cache: its lse, its
// loss (kept in row_loss[r]; 0 for ignored rows) and then its dlogits, in place. The same
// arithmetic as rows_log_sum_exp, rows_loss and rows_dlogits.
void rows_lse_loss_dlogits(float* logits, int64_t rows, int64_t vocab, const LabelReader& labels,
                           int64_t first, float* lse, float scale, double* row_loss) {
#pragma omp parallel for schedule(static) if (worth_threads(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) {
    float* z = logits + r * vocab;
    const int64_t label = labels[first + r];
    lse[r] = row_log_sum_exp(z, vocab);
    if (label == kIgnoreIndex) {
      row_loss[r] = 0;
      std::fill(z, z + vocab, 0.0f);
      continue;
    }
    row_loss[r] = token_loss(lse[r], z[label]);
    row_dlogits(z, vocab, label, lse[r], scale, z, false, 0);
  }
}

// fn(first, logits) for each chunk of tokens [first, first + logits.size(0)): logits = the
// chunk's h weight^T, one GEMM into the workspace.
template <class Fn>
void for_each_logits_chunk(const Tensor& h, const Tensor& weight, Tensor& workspace, Fn fn) {
  const int64_t tokens = h.size(0), chunk = workspace.size(0);
  for (int64_t first = 0; first < tokens; first += chunk) {
    const int64_t rows = std::min(chunk, tokens - first);
    Tensor logits = workspace.narrow(0, rows);
    cpu::matmul(h.narrow(first, rows), Transpose::No, weight, Transpose::Yes, logits, 1.0f,
                0.0f);
    fn(first, logits);
  }
}

// h or the weight as its GEMMs take it: widened to f32 once per call when the CPU widens bf16
// GEMMs (ops/matmul.h), rather than once per chunk GEMM; as it is otherwise.
Tensor gemm_operand(const Tensor& t) {
  const bool widen = t.dtype() == DType::BF16 && bf16_gemm() == Bf16Gemm::Widened;
  return widen ? *F32Input(t) : t;
}

// x = x rounded to bf16 (kept in f32): the widened path's dlogits, so that its GEMMs take the
// values a native bf16 GEMM would.
void round_to_bf16(float* x, int64_t n) {
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) x[i] = f32_from_bf16(bf16_from_f32(x[i]));
}

// The loss half of a forward + backward call: its outputs, and the rows' losses of a chunk.
struct LossOutputs {
  double sum = 0;
  float* lse;
  std::vector<double> row_loss;
};

// The backward entries (and forward_backward, given `loss`): per chunk, the logits (a
// recompute, or the forward's), turned into dlogits in place, then the dh GEMM and/or the
// dweight GEMM (a null output skips its GEMM). `slice`: the weight's rows in the whole
// vocabulary (already checked). Without `loss` the lse comes from the forward.
void chunked_gradients(const Tensor& h_given, const Tensor& weight_given, const Tensor& labels,
                       const float* lse, float grad_scale, Tensor* dh, Tensor* dweight,
                       Accumulate accumulate_dh, Tensor& workspace, VocabSlice slice,
                       LossOutputs* loss, const char* op) {
  const Tensor h = gemm_operand(h_given), weight = gemm_operand(weight_given);
  const int64_t vocab = weight.size(0);
  const LabelReader label_reader = read_labels(labels, slice.vocab, op);
  if (loss != nullptr) loss->row_loss.resize(size_t(workspace.size(0)));
  // bf16 h and weight: the two GEMMs take the chunk's dlogits rounded to bf16 (both operands
  // of a bf16 GEMM are bf16), the bf16 path's one extra rounding, as on the GPU: a bf16 copy
  // for native GEMMs, rounded in place for widened ones, whose f32 results dh and a bf16
  // dweight take through f32 and round once at the end.
  const bool bf16 = h_given.dtype() == DType::BF16, widened = bf16 && h.dtype() == DType::F32;
  Tensor dlogits_bf16;
  if (bf16 && !widened) {
    dlogits_bf16 = Tensor::empty({workspace.size(0), vocab}, DType::BF16, h.device());
  }
  std::optional<F32Output> dh32, dweight32;
  if (widened && dh != nullptr) dh = dh32.emplace(*dh, accumulate_dh == Accumulate::Yes).get();
  if (widened && dweight != nullptr) dweight = dweight32.emplace(*dweight, true).get();
  for_each_logits_chunk(h, weight, workspace, [&](int64_t first, Tensor& logits) {
    const int64_t rows = logits.size(0);
    float* z = logits.mutable_data<float>();
    if (loss != nullptr) {
      rows_lse_loss_dlogits(z, rows, vocab, label_reader, first, loss->lse + first, grad_scale,
                            loss->row_loss.data());
      for (int64_t r = 0; r < rows; ++r) {  // in token order, as the forward's rows_loss
        if (label_reader[first + r] != kIgnoreIndex) loss->sum += loss->row_loss[size_t(r)];
      }
    } else {
      rows_dlogits(z, rows, vocab, label_reader, first, lse + first, grad_scale, z, false,
                   slice.first);
    }
    const Tensor h_chunk = h.narrow(first, rows);
    Tensor dlogits = logits;
    if (dlogits_bf16.defined()) {
      dlogits = dlogits_bf16.narrow(0, rows);
      cpu::cast(logits, dlogits);
    } else if (widened) {
      round_to_bf16(z, rows * vocab);
    }
    if (dh != nullptr) {
      Tensor dh_chunk = dh->narrow(first, rows);
      cpu::matmul(dlogits, Transpose::No, weight, Transpose::No, dh_chunk, 1.0f,
                  accumulate_dh == Accumulate::Yes ? 1.0f : 0.0f);
    }
    if (dweight != nullptr) {
      cpu::matmul(dlogits, Transpose::Yes, h_chunk, Transpose::No, *dweight, 1.0f, 1.0f);
    }
  });
  if (dh32) dh32->store();
  if (dweight32) dweight32->store();
}

// The backward entries' common call.
void fused_backward(const Tensor& h, const Tensor& weight, const Tensor& labels, const Tensor& lse,
                    float grad_scale, Tensor* dh, Tensor* dweight, Accumulate accumulate_dh,
                    Tensor& workspace, VocabSlice slice, const char* op) {
  chunked_gradients(h, weight, labels, lse.data<float>(), grad_scale, dh, dweight, accumulate_dh,
                    workspace, slice, nullptr, op);
}

VocabSlice whole_vocabulary(const Tensor& weight) { return {0, weight.size(0)}; }

}  // namespace

void cross_entropy_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                           Tensor& loss_sum, Tensor& lse, Tensor& workspace) {
  check_cross_entropy_forward(h, weight, labels, loss_sum, lse, workspace, kFloatDTypes);
  const int64_t vocab = weight.size(0);
  const LabelReader label_reader = read_labels(labels, vocab, "cross_entropy_forward");
  float* lse_data = lse.mutable_data<float>();
  double loss = 0;
  for_each_logits_chunk(gemm_operand(h), gemm_operand(weight), workspace,
                        [&](int64_t first, Tensor& logits) {
    const int64_t rows = logits.size(0);
    const float* z = logits.data<float>();
    rows_log_sum_exp(z, rows, vocab, lse_data + first);
    loss += rows_loss(z, rows, vocab, label_reader, first, lse_data + first);
  });
  loss_sum.mutable_data<float>()[0] = float(loss);
}

void cross_entropy_backward_input(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  const Tensor& lse, float grad_scale, Tensor& dh,
                                  Accumulate accumulate, Tensor& workspace) {
  const char* op = "cross_entropy_backward_input";
  check_cross_entropy_backward(h, weight, labels, lse, &dh, nullptr, workspace, kFloatDTypes, op);
  fused_backward(h, weight, labels, lse, grad_scale, &dh, nullptr, accumulate, workspace,
                 whole_vocabulary(weight), op);
}

void cross_entropy_backward_weight(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                   const Tensor& lse, float grad_scale, Tensor& dweight,
                                   Tensor& workspace) {
  const char* op = "cross_entropy_backward_weight";
  check_cross_entropy_backward(h, weight, labels, lse, nullptr, &dweight, workspace, kFloatDTypes,
                               op);
  fused_backward(h, weight, labels, lse, grad_scale, nullptr, &dweight, Accumulate::Yes,
                 workspace, whole_vocabulary(weight), op);
}

void cross_entropy_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                            const Tensor& lse, float grad_scale, Tensor& dh, Tensor& dweight,
                            Accumulate accumulate_dh, Tensor& workspace) {
  const char* op = "cross_entropy_backward";
  check_cross_entropy_backward(h, weight, labels, lse, &dh, &dweight, workspace, kFloatDTypes, op);
  fused_backward(h, weight, labels, lse, grad_scale, &dh, &dweight, accumulate_dh, workspace,
                 whole_vocabulary(weight), op);
}

void cross_entropy_forward_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                    float grad_scale, Tensor& loss_sum, Tensor& lse, Tensor& dh,
                                    Tensor& dweight, Accumulate accumulate_dh,
                                    Tensor& workspace) {
  const char* op = "cross_entropy_forward_backward";
  check_cross_entropy_forward_backward(h, weight, labels, loss_sum, lse, dh, dweight, workspace,
                                       kFloatDTypes);
  LossOutputs loss{.lse = lse.mutable_data<float>()};
  chunked_gradients(h, weight, labels, nullptr, grad_scale, &dh, &dweight, accumulate_dh,
                    workspace, whole_vocabulary(weight), &loss, op);
  loss_sum.mutable_data<float>()[0] = float(loss.sum);
}

void cross_entropy_logits_forward(const Tensor& logits, const Tensor& labels, Tensor& loss_sum,
                                  Tensor& lse) {
  check_cross_entropy_logits_forward(logits, labels, loss_sum, lse, kFloatDTypes);
  if (any_bf16({&logits})) {
    return cpu::cross_entropy_logits_forward(*F32Input(logits), labels, loss_sum, lse);
  }
  const int64_t tokens = logits.size(0), vocab = logits.size(1);
  const LabelReader label_reader = read_labels(labels, vocab, "cross_entropy_logits_forward");
  float* lse_data = lse.mutable_data<float>();
  rows_log_sum_exp(logits.data<float>(), tokens, vocab, lse_data);
  loss_sum.mutable_data<float>()[0] =
      float(rows_loss(logits.data<float>(), tokens, vocab, label_reader, 0, lse_data));
}

void cross_entropy_logits_backward(const Tensor& logits, const Tensor& labels, const Tensor& lse,
                                   float grad_scale, Tensor& dlogits, Accumulate accumulate) {
  check_cross_entropy_logits_backward(logits, labels, lse, dlogits, kFloatDTypes);
  if (any_bf16({&logits, &dlogits})) {
    F32Output dlogits32(dlogits, accumulate == Accumulate::Yes);
    cpu::cross_entropy_logits_backward(*F32Input(logits), labels, lse, grad_scale, *dlogits32,
                                       accumulate);
    return dlogits32.store();
  }
  const int64_t tokens = logits.size(0), vocab = logits.size(1);
  const LabelReader label_reader = read_labels(labels, vocab, "cross_entropy_logits_backward");
  rows_dlogits(logits.data<float>(), tokens, vocab, label_reader, 0, lse.data<float>(), grad_scale,
               dlogits.mutable_data<float>(), accumulate == Accumulate::Yes);
}

void cross_entropy_slice_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                 VocabSlice slice, Tensor& row_max, Tensor& row_sum_exp,
                                 Tensor& label_logit, Tensor& workspace) {
  check_cross_entropy_slice_forward(h, weight, labels, slice, row_max, row_sum_exp, label_logit,
                                    workspace, kFloatDTypes);
  const int64_t vocab = weight.size(0);
  const LabelReader label_reader = read_labels(labels, slice.vocab, "cross_entropy_slice_forward");
  float* max_data = row_max.mutable_data<float>();
  float* sum_data = row_sum_exp.mutable_data<float>();
  float* label_data = label_logit.mutable_data<float>();
  for_each_logits_chunk(gemm_operand(h), gemm_operand(weight), workspace,
                        [&](int64_t first, Tensor& logits) {
    const float* z = logits.data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(logits.size(0) * vocab))
    for (int64_t r = 0; r < logits.size(0); ++r) {
      const float* row = z + r * vocab;
      const float max = max_of(row, vocab);
      const double sum = sum_of_exp(row, vocab, max);
      const int64_t column = label_reader[first + r] - slice.first;
      max_data[first + r] = max;
      sum_data[first + r] = float(sum);
      label_data[first + r] = column >= 0 && column < vocab ? row[column] : 0.0f;
    }
  });
}

void cross_entropy_slice_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  VocabSlice slice, const Tensor& lse, float grad_scale,
                                  Tensor* dh, Tensor* dweight, Accumulate accumulate_dh,
                                  Tensor& workspace) {
  check_cross_entropy_slice_backward(h, weight, labels, slice, lse, dh, dweight, workspace,
                                     kFloatDTypes);
  fused_backward(h, weight, labels, lse, grad_scale, dh, dweight, accumulate_dh, workspace, slice,
                 "cross_entropy_slice_backward");
}

}  // namespace titan::ops::cpu

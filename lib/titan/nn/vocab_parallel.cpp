#include "titan/nn/vocab_parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "titan/core/copy.h"
#include "titan/ops/columns.h"
#include "titan/ops/embedding.h"
#include "titan/ops/matmul.h"

namespace titan::nn {
namespace {

Tensor workspace_for(int64_t tokens, int64_t vocab, Device device) {
  return Tensor::empty(ops::cross_entropy_workspace_shape(tokens, vocab), DType::F32, device);
}

// The loss on the host: waits for the device, and then raises a bad label a GPU's ops
// recorded (ops::raise_label_error) at no further wait.
double read_loss(const Tensor& loss_sum) {
  const double loss = double(to_device(loss_sum, Device::cpu()).data<float>()[0]);
  ops::raise_label_error(loss_sum.device());
  return loss;
}

// The loss from the slices' statistics (see the top of the header).
double loss_parallel_forward(const TensorParallel& tp, const Tensor& h, const Tensor& weight,
                             ops::VocabSlice slice, const Tensor& labels, Tensor& lse) {
  const int64_t N = h.size(0);
  Tensor max = Tensor::empty({N}, DType::F32, h.device());
  Tensor sums = Tensor::empty({2, N}, DType::F32, h.device());  // sum of exp, label logit
  Tensor sum_exp = sums.narrow(0, 1).reshape({N}), label_logit = sums.narrow(1, 1).reshape({N});
  if (weight.size(0) > 0) {
    Tensor workspace = workspace_for(N, weight.size(0), h.device());
    ops::cross_entropy_slice_forward(h, weight, labels, slice, max, sum_exp, label_logit,
                                     workspace);
  } else {  // an empty slice (a vocabulary that tp does not divide)
    std::fill_n(max.mutable_data<float>(), N, -std::numeric_limits<float>::infinity());
    sums.zero_();
  }
  Tensor own_max = Tensor::empty({N}, DType::F32, h.device());
  copy_tensor(max, own_max);
  tp.all_reduce(max, RowReduce::Max);
  float* s = sum_exp.mutable_data<float>();
  const float* m = max.data<float>();
  const float* own = own_max.data<float>();
  for (int64_t n = 0; n < N; ++n) s[n] = float(double(s[n]) * std::exp(double(own[n]) - m[n]));
  tp.all_reduce(sums, RowReduce::Sum);
  float* l = lse.mutable_data<float>();
  const float* z = label_logit.data<float>();
  double loss = 0;
  for (int64_t n = 0; n < N; ++n) {
    l[n] = float(double(m[n]) + std::log(double(s[n])));
    const int64_t label = labels.dtype() == DType::I32 ? labels.data<int32_t>()[n]
                                                       : labels.data<int64_t>()[n];
    if (label != ops::kIgnoreIndex) loss += double(l[n]) - double(z[n]);
  }
  return loss;
}

}  // namespace

// Each rank's slice padded to the widest, all-gathered, trimmed.
Tensor vocab_parallel_logits(const TensorParallel& tp, const Tensor& h, const Tensor& weight,
                             ops::VocabSlice slice) {
  if (tp.size() == 1) {
    Tensor logits = Tensor::empty({h.size(0), weight.size(0)}, DType::F32, h.device());
    ops::linear_forward(h, weight, logits);
    return logits;
  }
  const int64_t N = h.size(0), width = (slice.vocab + tp.size() - 1) / tp.size();
  Tensor mine = Tensor::zeros({N, width}, DType::F32, h.device());
  if (weight.size(0) > 0) {
    Tensor own = Tensor::empty({N, weight.size(0)}, DType::F32, h.device());
    ops::linear_forward(h, weight, own);
    ops::copy_columns(own, 0, mine, 0, weight.size(0));
  }
  Tensor padded = Tensor::empty({N, width * tp.size()}, DType::F32, h.device());
  tp.gather_columns(mine, padded);
  Tensor logits = Tensor::empty({N, slice.vocab}, DType::F32, h.device());
  for (int64_t r = 0; r < tp.size(); ++r) {
    const int64_t first = r * width, count = std::clamp<int64_t>(slice.vocab - first, 0, width);
    if (count > 0) ops::copy_columns(padded, r * width, logits, first, count);
  }
  return logits;
}

void vocab_parallel_embedding_forward(const TensorParallel& tp, const Tensor& ids,
                                      const Tensor& table, ops::VocabSlice slice, Tensor& x0) {
  if (tp.size() == 1) return ops::embedding_forward(ids, table, x0);
  tp.reduce_rows(x0, ids.numel(), [&](int64_t first, int64_t count, Tensor& partial) {
    ops::embedding_slice_forward(ids.narrow(first, count), table, slice.first, partial);
  });
}

void vocab_parallel_embedding_backward(const TensorParallel& tp, const Tensor& ids,
                                       const Tensor& dx0, ops::VocabSlice slice, Tensor& dtable) {
  if (tp.size() == 1) return ops::embedding_backward_weight(ids, dx0, dtable);
  Tensor all;
  // Each row's gradient goes to its token's table row once all are here: one pass in
  // token order, so repeated tokens add up in the order one rank adds them.
  tp.gather_rows(dx0, all, [](const Tensor&, int64_t) {});
  ops::embedding_slice_backward_weight(ids, all, slice.first, dtable);
}

int64_t VocabParallelLossRecord::bytes() const {
  return (lse.defined() ? lse.bytes() : 0) + (h_gathered ? h.bytes() : 0);
}

double vocab_parallel_loss_forward(const TensorParallel& tp, const Tensor& h,
                                   const Tensor& weight, ops::VocabSlice slice,
                                   const Tensor& labels, VocabParallelLossRecord& r) {
  r.h_gathered = tp.sequence_parallel();
  tp.gather_rows(h, r.h, [](const Tensor&, int64_t) {});
  const int64_t N = r.h.size(0);
  r.lse = Tensor::empty({N}, DType::F32, h.device());
  Tensor loss_sum = Tensor::empty({1}, DType::F32, h.device());
  if (tp.size() == 1) {
    Tensor workspace = workspace_for(N, slice.vocab, h.device());
    ops::cross_entropy_forward(r.h, weight, labels, loss_sum, r.lse, workspace);
  } else if (tp.loss_parallel()) {
    return loss_parallel_forward(tp, r.h, weight, slice, labels, r.lse);
  } else {
    const Tensor logits = vocab_parallel_logits(tp, r.h, weight, slice);
    ops::cross_entropy_logits_forward(logits, labels, loss_sum, r.lse);
  }
  return read_loss(loss_sum);
}

void vocab_parallel_loss_backward(const TensorParallel& tp, const VocabParallelLossRecord& r,
                                  const Tensor& weight, ops::VocabSlice slice,
                                  const Tensor& labels, float grad_scale, Tensor* dh,
                                  Tensor* dweight) {
  const int64_t N = r.h.size(0);
  if (tp.size() == 1) {
    Tensor workspace = workspace_for(N, slice.vocab, r.h.device());
    if (dh && dweight) {
      return ops::cross_entropy_backward(r.h, weight, labels, r.lse, grad_scale, *dh, *dweight,
                                         ops::Accumulate::No, workspace);
    }
    if (dh) {
      return ops::cross_entropy_backward_input(r.h, weight, labels, r.lse, grad_scale, *dh,
                                               ops::Accumulate::No, workspace);
    }
    return ops::cross_entropy_backward_weight(r.h, weight, labels, r.lse, grad_scale, *dweight,
                                              workspace);
  }
  // This rank's columns of dlogits, for the rows [first, first + count).
  Tensor slice_dlogits;  // without loss parallel: all rows, from the gathered logits
  if (!tp.loss_parallel()) {
    // In h's dtype: the GEMMs below take both operands in it, so under mixed precision the
    // dlogits are rounded to bf16, as the fused loss rounds them.
    Tensor logits = vocab_parallel_logits(tp, r.h, weight, slice);
    Tensor dlogits = Tensor::empty(logits.shape(), r.h.dtype(), logits.device());
    ops::cross_entropy_logits_backward(logits, labels, r.lse, grad_scale, dlogits,
                                       ops::Accumulate::No);
    slice_dlogits = Tensor::empty({N, weight.size(0)}, r.h.dtype(), logits.device());
    ops::copy_columns(dlogits, slice.first, slice_dlogits, 0, weight.size(0));
  }
  // The slice's gradients for rows [first, first + count): dh's partial sums (or none) and
  // dweight's rows (+=).
  auto slice_backward = [&](int64_t first, int64_t count, Tensor* dh_rows) {
    if (weight.size(0) == 0) {
      if (dh_rows) dh_rows->zero_();
      return;
    }
    const Tensor h_rows = r.h.narrow(first, count);
    if (slice_dlogits.defined()) {
      const Tensor d = slice_dlogits.narrow(first, count);
      if (dh_rows) ops::linear_backward_input(d, weight, *dh_rows, ops::Accumulate::No);
      if (dweight) ops::linear_backward_weight(d, h_rows, *dweight);
      return;
    }
    Tensor workspace = workspace_for(count, weight.size(0), r.h.device());
    ops::cross_entropy_slice_backward(h_rows, weight, labels.narrow(first, count), slice,
                                      r.lse.narrow(first, count), grad_scale, dh_rows, dweight,
                                      ops::Accumulate::No, workspace);
  };
  if (!dh) return slice_backward(0, N, nullptr);
  tp.reduce_rows(*dh, N, [&](int64_t first, int64_t count, Tensor& partial) {
    slice_backward(first, count, &partial);
  });
}

double vocab_parallel_loss_forward_backward(const TensorParallel& tp, const Tensor& h,
                                            const Tensor& weight, ops::VocabSlice slice,
                                            const Tensor& labels, float grad_scale, Tensor& dh,
                                            Tensor& dweight) {
  if (tp.size() > 1) {
    VocabParallelLossRecord record;
    const double loss = vocab_parallel_loss_forward(tp, h, weight, slice, labels, record);
    vocab_parallel_loss_backward(tp, record, weight, slice, labels, grad_scale, &dh, &dweight);
    return loss;
  }
  const int64_t N = h.size(0);
  Tensor lse = Tensor::empty({N}, DType::F32, h.device());
  Tensor loss_sum = Tensor::empty({1}, DType::F32, h.device());
  Tensor workspace = workspace_for(N, slice.vocab, h.device());
  ops::cross_entropy_forward_backward(h, weight, labels, grad_scale, loss_sum, lse, dh, dweight,
                                      ops::Accumulate::No, workspace);
  return read_loss(loss_sum);
}

}  // namespace titan::nn

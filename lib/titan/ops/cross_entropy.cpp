// Device-independent parts of ops/cross_entropy.h: counting valid labels, and the argument
// checks both backends make.
#include "titan/ops/cross_entropy.h"

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

namespace {

// h [N, D] and weight [V, D] of one accepted dtype, V >= 1, workspace [C, V] f32 with
// C >= 1; returns N and V.
struct Dims {
  int64_t tokens, vocab;
};
Dims check_fused(const Tensor& h, const Tensor& weight, const Tensor& workspace,
                 FloatDTypes accepted, const char* op) {
  TITAN_CHECK(h.defined() && weight.defined() && workspace.defined())
      << op << ": undefined h, weight or workspace";
  TITAN_CHECK(accepts(accepted, h.dtype()) && weight.dtype() == h.dtype())
      << op << ": h is " << dtype_name(h.dtype()) << " and weight " << dtype_name(weight.dtype())
      << "; expected both "
      << (accepted == FloatDTypes::F32OrBF16 ? "f32 or both bf16" : "f32");
  check_dtype(workspace, DType::F32, op, "workspace");
  TITAN_CHECK(h.dim() == 2) << op << ": h must be [N, D], got " << shape_string(h.shape());
  TITAN_CHECK(weight.dim() == 2 && weight.size(1) == h.size(1))
      << op << ": weight must be [V, D] with D = " << h.size(1) << ", got "
      << shape_string(weight.shape());
  const Dims d{h.size(0), weight.size(0)};
  TITAN_CHECK(d.vocab >= 1) << op << ": empty vocabulary";
  TITAN_CHECK(workspace.dim() == 2 && workspace.size(0) >= 1 && workspace.size(1) == d.vocab)
      << op << ": workspace must be [C, V] with C >= 1 and V = " << d.vocab << ", got "
      << shape_string(workspace.shape()) << " (see cross_entropy_workspace_shape)";
  return d;
}

// logits [N, V] of an accepted dtype, V >= 1; returns N and V.
Dims check_logits(const Tensor& logits, FloatDTypes accepted, const char* op) {
  check_float_dtype(logits, accepted, op, "logits");
  TITAN_CHECK(logits.dim() == 2 && logits.size(1) >= 1)
      << op << ": logits must be [N, V], got " << shape_string(logits.shape());
  return {logits.size(0), logits.size(1)};
}

// Labels [N], i32 or i64; their values are each backend's to read.
void check_labels(const Tensor& labels, int64_t tokens, const char* op) {
  TITAN_CHECK(labels.defined()) << op << ": labels is undefined";
  TITAN_CHECK(labels.dtype() == DType::I32 || labels.dtype() == DType::I64)
      << op << ": labels is " << dtype_name(labels.dtype()) << ", expected i32 or i64";
  check_shape(labels, {tokens}, op, "labels");
}

// loss_sum [1], lse [N]: f32 whatever the inputs' dtype.
void check_f32_vector(const Tensor& t, const Shape& shape, const char* op, const char* arg) {
  TITAN_CHECK(t.defined()) << op << ": " << arg << " is undefined";
  check_dtype(t, DType::F32, op, arg);
  check_shape(t, shape, op, arg);
}

// A gradient of an input: the input's shape, f32, or bf16 for bf16 inputs.
void check_gradient(const Tensor& g, const Tensor& input, FloatDTypes accepted, const char* op,
                    const char* arg) {
  TITAN_CHECK(g.defined()) << op << ": " << arg << " is undefined";
  TITAN_CHECK(g.dtype() == DType::F32 || (g.dtype() == DType::BF16 && input.dtype() == DType::BF16))
      << op << ": " << arg << " is " << dtype_name(g.dtype()) << " for "
      << dtype_name(input.dtype()) << " inputs; expected f32"
      << (accepted == FloatDTypes::F32OrBF16 ? ", or bf16 for bf16 inputs" : "");
  check_shape(g, input.shape(), op, arg);
}

}  // namespace

void check_cross_entropy_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                 const Tensor& loss_sum, const Tensor& lse,
                                 const Tensor& workspace, FloatDTypes accepted,
                                 const char* op) {
  const Dims d = check_fused(h, weight, workspace, accepted, op);
  check_labels(labels, d.tokens, op);
  check_f32_vector(loss_sum, {1}, op, "loss_sum");
  check_f32_vector(lse, {d.tokens}, op, "lse");
}

void check_cross_entropy_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  const Tensor& lse, const Tensor* dh, const Tensor* dweight,
                                  const Tensor& workspace, FloatDTypes accepted, const char* op) {
  const Dims d = check_fused(h, weight, workspace, accepted, op);
  check_labels(labels, d.tokens, op);
  check_f32_vector(lse, {d.tokens}, op, "lse");
  if (dh != nullptr) check_gradient(*dh, h, accepted, op, "dh");
  if (dweight != nullptr) check_gradient(*dweight, weight, accepted, op, "dweight");
}

void check_cross_entropy_forward_backward(const Tensor& h, const Tensor& weight,
                                          const Tensor& labels, const Tensor& loss_sum,
                                          const Tensor& lse, const Tensor& dh,
                                          const Tensor& dweight, const Tensor& workspace,
                                          FloatDTypes accepted) {
  const char* op = "cross_entropy_forward_backward";
  check_cross_entropy_forward(h, weight, labels, loss_sum, lse, workspace, accepted, op);
  check_cross_entropy_backward(h, weight, labels, lse, &dh, &dweight, workspace, accepted, op);
}

void check_cross_entropy_logits_forward(const Tensor& logits, const Tensor& labels,
                                        const Tensor& loss_sum, const Tensor& lse,
                                        FloatDTypes accepted) {
  const char* op = "cross_entropy_logits_forward";
  const Dims d = check_logits(logits, accepted, op);
  check_labels(labels, d.tokens, op);
  check_f32_vector(loss_sum, {1}, op, "loss_sum");
  check_f32_vector(lse, {d.tokens}, op, "lse");
}

void check_cross_entropy_logits_backward(const Tensor& logits, const Tensor& labels,
                                         const Tensor& lse, const Tensor& dlogits,
                                         FloatDTypes accepted) {
  const char* op = "cross_entropy_logits_backward";
  const Dims d = check_logits(logits, accepted, op);
  check_labels(labels, d.tokens, op);
  check_f32_vector(lse, {d.tokens}, op, "lse");
  check_float_dtype(dlogits, accepted, op, "dlogits");
  check_shape(dlogits, logits.shape(), op, "dlogits");
}

void check_cross_entropy_label(int64_t label, int64_t token, int64_t vocab, const char* op) {
  TITAN_CHECK((label >= 0 && label < vocab) || label == kIgnoreIndex)
      << op << ": label " << label << " of token " << token << " is outside the vocabulary [0, "
      << vocab << ") and is not the ignore index " << kIgnoreIndex;
}

namespace {

void check_slice(const Tensor& weight, VocabSlice slice, const char* op) {
  TITAN_CHECK(slice.first >= 0 && slice.first + weight.size(0) <= slice.vocab)
      << op << ": rows [" << slice.first << ", " << slice.first + weight.size(0)
      << ") are not a slice of a vocabulary of " << slice.vocab;
}

}  // namespace

void check_cross_entropy_slice_forward(const Tensor& h, const Tensor& weight,
                                       const Tensor& labels, VocabSlice slice,
                                       const Tensor& row_max, const Tensor& row_sum_exp,
                                       const Tensor& label_logit, const Tensor& workspace,
                                       FloatDTypes accepted) {
  const char* op = "cross_entropy_slice_forward";
  const Dims d = check_fused(h, weight, workspace, accepted, op);
  check_labels(labels, d.tokens, op);
  check_slice(weight, slice, op);
  check_f32_vector(row_max, {d.tokens}, op, "row_max");
  check_f32_vector(row_sum_exp, {d.tokens}, op, "row_sum_exp");
  check_f32_vector(label_logit, {d.tokens}, op, "label_logit");
}

void check_cross_entropy_slice_backward(const Tensor& h, const Tensor& weight,
                                        const Tensor& labels, VocabSlice slice,
                                        const Tensor& lse, const Tensor* dh,
                                        const Tensor* dweight, const Tensor& workspace,
                                        FloatDTypes accepted) {
  const char* op = "cross_entropy_slice_backward";
  check_cross_entropy_backward(h, weight, labels, lse, dh, dweight, workspace, accepted, op);
  check_slice(weight, slice, op);
}

}  // namespace titan::ops

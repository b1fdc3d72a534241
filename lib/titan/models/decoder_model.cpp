#include "titan/models/decoder_model.h"

#include <algorithm>
#include <cmath>

#include "titan/core/copy.h"
#include "titan/core/trace.h"
#include "titan/models/activation_checkpoint.h"

namespace titan::models {
namespace {

nn::InitRule output_rule(int64_t dim) {
  const double std = 1.0 / std::sqrt(double(dim));
  return nn::InitRule{nn::InitKind::TruncatedNormal, std, 3 * std};
}

// Memory allocated while a module runs (its output, what it keeps for backward, its
// backward's temporaries) is tagged with the module, so a memory snapshot shows the
// activations of each layer.
MemoryTagScope activations_of(const std::string& module) {
  return MemoryTagScope("activations/" + module);
}

}  // namespace

int64_t DecoderRecord::bytes() const {
  int64_t total = 0;
  for (const Tensor& t : layer_inputs) total += t.defined() ? t.bytes() : 0;
  for (const auto& r : layers) total += r ? r->bytes() : 0;
  for (const Tensor* t : {&hn, &rstd_norm, &dhn, &dx0}) total += t->defined() ? t->bytes() : 0;
  return total + loss.bytes();
}

DecoderModel::DecoderModel(DecoderSpec spec, const nn::ParameterLayout& layout,
                           const std::vector<StageModules>& stage_modules)
    : spec_(std::move(spec)),
      device_(layout.device),
      compute_dtype_(layout.compute_dtype),
      tp_(layout.tp_group()),
      cp_(layout.cp_group()) {
  const int64_t D = spec_.dim, V = spec_.vocab_size;
  const std::string& family = spec_.family;
  const std::vector<StageModules> modules =
      stage_modules.empty() ? split_decoder_stages(int(spec_.n_layers), 1, 0, 0) : stage_modules;
  std::vector<int> layer_ids;  // each held block's global index, in stage order
  for (const StageModules& list : modules) {
    Stage& stage = stages_.emplace_back();
    for (const std::string& name : list) {
      if (name == "tok_embeddings") {
        stage.embedding = true;
      } else if (name == "norm" || name == "output") {
        stage.head = true;
      } else {
        TITAN_CHECK(name.rfind("layers.", 0) == 0) << family << ": no module " << name;
        stage.layers.push_back(layer_ids.size());
        layer_ids.push_back(std::stoi(name.substr(7)));
      }
    }
  }
  const bool has_embedding = std::any_of(stages_.begin(), stages_.end(),
                                         [](const Stage& st) { return st.embedding; });
  const bool has_head =
      std::any_of(stages_.begin(), stages_.end(), [](const Stage& st) { return st.head; });
  TITAN_CHECK(!tied() || (stages_.size() == 1 && has_embedding && has_head))
      << family << ": a tied output must share the embedding's stage";
  const nn::Placer placer(layout, spec_.plan);
  if (has_embedding) {
    tok_embeddings_ = std::make_unique<nn::Parameter>(
        "tok_embeddings.weight", Shape{V, D},
        tied() ? output_rule(D) : nn::InitRule{nn::InitKind::Normal, 1.0, 0.0},
        placer("tok_embeddings.weight"));
  }
  layers_.reserve(layer_ids.size());
  for (const int i : layer_ids) layers_.push_back(spec_.make_block(i, placer));
  layer_ids_ = layer_ids;
  recompute_.assign(layers_.size(), nn::Recompute::None);
  if (has_head) {
    norm_ = std::make_unique<nn::RmsNorm>("norm", D, spec_.norm_eps, placer);
    if (!tied()) {
      output_ = std::make_unique<nn::Parameter>("output.weight", Shape{V, D}, output_rule(D),
                                                placer("output.weight"));
    }
  }
  const MemoryTagScope tag("buffers");  // the RoPE table: state that is not a parameter
  freqs_ = on_device(spec_.rope, device_);
}

void DecoderModel::set_activation_checkpointing(
    const config::ActivationCheckpointSection& section) {
  recompute_ = activation_checkpoint_plan(section, layer_ids_);
}

std::vector<nn::Parameter*> DecoderModel::parameters() {
  std::vector<nn::Parameter*> params;
  if (tok_embeddings_) params.push_back(tok_embeddings_.get());
  for (const auto& layer : layers_) {
    for (nn::Parameter* p : layer->parameters()) params.push_back(p);
  }
  if (norm_) params.push_back(&norm_->weight());
  if (output_) params.push_back(output_.get());
  return params;
}

nn::Parameter& DecoderModel::output_weight() { return output_ ? *output_ : *tok_embeddings_; }

std::vector<nn::ParameterUnit> DecoderModel::units() {
  std::vector<nn::ParameterUnit> units;
  if (tied()) {
    units.push_back({"tok_embeddings, norm", {tok_embeddings_.get(), &norm_->weight()}, true,
                     false});
  } else if (tok_embeddings_) {
    units.push_back({"tok_embeddings", {tok_embeddings_.get()}, false, true});
  }
  for (size_t k = 0; k < layers_.size(); ++k) {
    units.push_back({layer_name(k), layers_[k]->parameters(), true});
  }
  if (output_) units.push_back({"norm, output", {&norm_->weight(), output_.get()}, true, false});
  return units;
}

std::vector<int> DecoderModel::stage_units(int stage) const {
  const Stage& st = stages_.at(size_t(stage));
  std::vector<int> units;
  if (st.embedding) units.push_back(embedding_unit());
  for (const size_t k : st.layers) units.push_back(layer_unit(k));
  if (st.head && !tied()) units.push_back(head_unit());
  return units;
}

Shape DecoderModel::stage_activation_shape(int64_t batch, int64_t seq_len) const {
  return {tp_.local_rows(batch * (seq_len / cp_.size())), spec_.dim};
}

void DecoderModel::hook(Hook hook, int unit) const {
  if (!hooks_) return;
  switch (hook) {
    case Hook::BeforeForward: hooks_->before_forward(unit); break;
    case Hook::AfterForward: hooks_->after_forward(unit); break;
    case Hook::BeforeBackward: hooks_->before_backward(unit); break;
    case Hook::AfterBackward: hooks_->after_backward(unit); break;
  }
}

std::unique_ptr<ActivationRecord> DecoderModel::new_record() const {
  return std::make_unique<DecoderRecord>();
}

const DecoderModel::Stage& DecoderModel::stage_of(const DecoderRecord& record) const {
  TITAN_CHECK(record.pipeline.stage >= 0 && record.pipeline.stage < stage_count())
      << spec_.family << ": stage " << record.pipeline.stage << " of a model with "
      << stage_count();
  return stages_[size_t(record.pipeline.stage)];
}

void DecoderModel::release(DecoderRecord& record) {
  StageTensors kept = std::move(record.pipeline);
  record = DecoderRecord{};
  record.pipeline.stage = kept.stage;
  record.pipeline.input_grad = std::move(kept.input_grad);
  record.pipeline.defer_loss = kept.defer_loss;
  record.pipeline.deferred_loss = kept.deferred_loss;
}

ops::VocabSlice DecoderModel::vocab_slice(const nn::Parameter& weight) const {
  return {nn::compute_box(weight.global_shape(), weight.placement()).offset[0], spec_.vocab_size};
}

double DecoderModel::forward(const Tensor& tokens, const Tensor& labels,
                            ActivationRecord& record) const {
  DecoderRecord& r = record_as<DecoderRecord>(record);
  TITAN_CHECK(tokens.dim() == 2 && labels.shape() == tokens.shape())
      << "forward: tokens and labels must both be [B, T], got " << shape_string(tokens.shape())
      << " and " << shape_string(labels.shape());
  const int64_t B = tokens.size(0), T = tokens.size(1), D = spec_.dim, N = B * T / cp_.size();
  TITAN_CHECK(T <= spec_.max_seq_len) << "forward: sequence of " << T << " tokens is longer than "
                                      << spec_.max_seq_len << " (training.seq_len)";
  const bool masks_documents = spec_.attn_mask_type == config::AttentionMaskType::BlockCausal;
  TITAN_CHECK(!masks_documents || document_end_)
      << "forward: block_causal attention before set_document_end";
  TITAN_CHECK(N % tp_.size() == 0 || !tp_.sequence_parallel())
      << "forward: " << N << " token rows do not split over tensor_parallel_degree "
      << tp_.size() << " (sequence parallel)";
  const int64_t n = tp_.local_rows(N);  // this rank's rows of the residual stream
  const Stage& stage = stage_of(r);
  StageTensors io = std::move(r.pipeline);
  r = DecoderRecord{};
  r.pipeline.stage = io.stage;
  r.pipeline.defer_loss = io.defer_loss;
  {
    const MemoryTagScope tag("data");
    // Whole sequences: the mask and this rank's tokens come from the host batch.
    const bool whole_needed = cp_.size() > 1 || masks_documents;
    const Tensor host_tokens = whole_needed ? on_device(tokens, Device::cpu()) : tokens;
    r.sequence = nn::sequence_layout(cp_, host_tokens, freqs_,
                                     masks_documents ? document_end_ : std::nullopt, device_);
    const Tensor host_labels = cp_.size() > 1 ? on_device(labels, Device::cpu()) : labels;
    // The data loader's host batch: one copy of this rank's part.
    r.tokens = on_device(nn::local_tokens(cp_, host_tokens), device_);
    r.labels = on_device(nn::local_tokens(cp_, host_labels), device_);
  }
  if (stage.embedding) {
    hook(Hook::BeforeForward, embedding_unit());
    const MemoryTagScope tag = activations_of("tok_embeddings");
    r.layer_inputs.push_back(Tensor::empty({n, D}, compute_dtype_, device_));
    TraceSpan span("tok_embeddings.forward");
    nn::vocab_parallel_embedding_forward(tp_, r.tokens.reshape({N}), tok_embeddings_->value(),
                                         vocab_slice(*tok_embeddings_), r.layer_inputs[0]);
  } else {
    TITAN_CHECK(io.input.shape() == (Shape{n, D}))
        << "forward: stage input " << shape_string(io.input.shape()) << ", expected [" << n
        << ", " << D << "]";
    r.layer_inputs.push_back(io.input);
  }
  if (stage.embedding && !tied()) hook(Hook::AfterForward, embedding_unit());
  r.layers.resize(stage.layers.size());
  for (size_t j = 0; j < stage.layers.size(); ++j) {
    const size_t k = stage.layers[j];
    r.layers[j] = layers_[k]->new_record();
    hook(Hook::BeforeForward, layer_unit(k));
    const MemoryTagScope tag = activations_of(layer_name(k));
    Tensor out = Tensor::empty({n, D}, compute_dtype_, device_);
    {
      TraceSpan span(layer_name(k) + ".forward");
      layers_[k]->forward(r.layer_inputs[j], r.sequence, out, *r.layers[j]);
    }
    layers_[k]->release_for_recompute(*r.layers[j], recompute_[k]);
    hook(Hook::AfterForward, layer_unit(k));
    r.layer_inputs.push_back(out);
  }
  if (!stage.head) {
    r.pipeline.output = r.layer_inputs.back();
    return 0;
  }
  if (!tied()) hook(Hook::BeforeForward, head_unit());
  const MemoryTagScope tag = activations_of("output");
  TraceSpan head_span("norm.output.loss.forward");
  r.hn = Tensor::empty({n, D}, compute_dtype_, device_);
  r.rstd_norm = Tensor::empty({n}, DType::F32, device_);
  norm_->forward(r.layer_inputs.back(), r.hn, r.rstd_norm);
  const double loss_sum =  // with defer_loss, the backward computes it (StageTensors)
      r.pipeline.defer_loss ? 0.0
                            : nn::vocab_parallel_loss_forward(tp_, r.hn, output().value(),
                                                              vocab_slice(output()),
                                                              r.labels.reshape({N}), r.loss);
  hook(Hook::AfterForward, head_unit());
  return loss_sum;
}

Tensor DecoderModel::logits(const ActivationRecord& record) const {
  const DecoderRecord& r = record_as<DecoderRecord>(record);
  TITAN_CHECK(stage_of(r).head) << "logits: the record's stage has no output layer";
  const int64_t B = r.tokens.size(0), T = r.tokens.size(1);
  return nn::vocab_parallel_logits(tp_, r.loss.h, output().value(), vocab_slice(output()))
      .reshape({B, T, spec_.vocab_size});
}

void DecoderModel::output_backward_input(DecoderRecord& r, float grad_scale, Tensor& dh) const {
  const int64_t n = r.hn.size(0), D = r.hn.size(1), N = r.tokens.numel();
  r.dhn = Tensor::empty({n, D}, compute_dtype_, device_);
  nn::vocab_parallel_loss_backward(tp_, r.loss, output().value(), vocab_slice(output()),
                                   r.labels.reshape({N}), grad_scale, &r.dhn, nullptr);
  norm_->backward_input(r.dhn, r.layer_inputs.back(), r.rstd_norm, dh, ops::Accumulate::No);
}

// The gradient at a stage's output: the received one, or none (the head makes its own).
static Tensor stage_output_grad(const DecoderRecord& r) {
  const Tensor& out = r.layer_inputs.back();
  TITAN_CHECK(r.pipeline.output_grad.shape() == out.shape())
      << "backward: output gradient " << shape_string(r.pipeline.output_grad.shape())
      << " for a stage output " << shape_string(out.shape());
  return r.pipeline.output_grad;
}

Tensor DecoderModel::block_backward_input(DecoderRecord& r, size_t j, const Tensor& dout) const {
  const size_t k = stage_of(r).layers[j];
  hook(Hook::BeforeBackward, layer_unit(k));  // FSDP gathers before the recompute reads
  const MemoryTagScope tag = activations_of(layer_name(k));
  layers_[k]->recompute(*r.layers[j], r.sequence);
  Tensor dx = Tensor::empty(dout.shape(), compute_dtype_, device_);
  TraceSpan span(layer_name(k) + ".backward_input");
  layers_[k]->backward_input(dout, r.sequence, *r.layers[j], dx);
  return dx;
}

void DecoderModel::backward(ActivationRecord& record, float grad_scale) {
  DecoderRecord& r = record_as<DecoderRecord>(record);
  const Stage& stage = stage_of(r);
  const int64_t n = r.layer_inputs.front().size(0), D = spec_.dim, N = r.tokens.numel();
  Tensor dx;
  if (stage.head) {
    nn::Parameter& w = output_weight();
    hook(Hook::BeforeBackward, head_unit());
    // The output layer: one logits recompute for both of its gradients (none with the
    // deferred loss: its logits serve the loss too).
    const MemoryTagScope tag = activations_of("output");
    r.dhn = Tensor::empty({n, D}, compute_dtype_, device_);
    if (r.pipeline.defer_loss) {
      TraceSpan span("norm.output.loss.forward_backward");
      r.pipeline.deferred_loss = nn::vocab_parallel_loss_forward_backward(
          tp_, r.hn, w.value(), vocab_slice(w), r.labels.reshape({N}), grad_scale, r.dhn,
          w.grad());
    } else {
      TraceSpan span("norm.output.loss.backward");
      nn::vocab_parallel_loss_backward(tp_, r.loss, w.value(), vocab_slice(w),
                                       r.labels.reshape({N}), grad_scale, &r.dhn, &w.grad());
    }
    dx = Tensor::empty({n, D}, compute_dtype_, device_);
    const Tensor& x_last = r.layer_inputs.back();
    norm_->backward_input(r.dhn, x_last, r.rstd_norm, dx, ops::Accumulate::No);
    norm_->backward_weight(r.dhn, x_last, r.rstd_norm);
    if (!tied()) hook(Hook::AfterBackward, head_unit());
  } else {
    dx = stage_output_grad(r);
  }
  for (size_t j = stage.layers.size(); j-- > 0;) {
    const size_t k = stage.layers[j];
    dx = block_backward_input(r, j, dx);
    {
      const MemoryTagScope tag = activations_of(layer_name(k));
      TraceSpan span(layer_name(k) + ".backward_weight");
      layers_[k]->backward_weight(*r.layers[j]);
    }
    hook(Hook::AfterBackward, layer_unit(k));
    r.layer_inputs[j + 1] = Tensor();  // this layer's output is no longer needed
  }
  if (stage.embedding) {
    if (!tied()) hook(Hook::BeforeBackward, embedding_unit());
    const MemoryTagScope tag = activations_of("tok_embeddings");
    TraceSpan span("tok_embeddings.backward_weight");
    nn::vocab_parallel_embedding_backward(tp_, r.tokens.reshape({N}), dx,
                                          vocab_slice(*tok_embeddings_), tok_embeddings_->grad());
    hook(Hook::AfterBackward, embedding_unit());
  } else {
    r.pipeline.input_grad = dx;
  }
  release(r);
}

void DecoderModel::backward_input(ActivationRecord& record, float grad_scale) {
  DecoderRecord& r = record_as<DecoderRecord>(record);
  TITAN_CHECK(!r.pipeline.defer_loss || !stage_of(r).head)
      << "backward_input: the record's loss waits for backward (defer_loss)";
  const Stage& stage = stage_of(r);
  const int64_t n = r.layer_inputs.front().size(0), D = spec_.dim;
  Tensor dx;
  if (stage.head) {
    hook(Hook::BeforeBackward, head_unit());
    const MemoryTagScope tag = activations_of("output");
    dx = Tensor::empty({n, D}, compute_dtype_, device_);
    output_backward_input(r, grad_scale, dx);
  } else {
    dx = stage_output_grad(r);
  }
  for (size_t j = stage.layers.size(); j-- > 0;) dx = block_backward_input(r, j, dx);
  if (stage.embedding) {
    if (!tied()) hook(Hook::BeforeBackward, embedding_unit());
    r.dx0 = dx;
  } else {
    r.pipeline.input_grad = dx;
  }
}

void DecoderModel::backward_weight(ActivationRecord& record, float grad_scale) {
  DecoderRecord& r = record_as<DecoderRecord>(record);
  const Stage& stage = stage_of(r);
  const int64_t N = r.tokens.numel();
  if (stage.head) {
    nn::Parameter& w = output_weight();
    {
      const MemoryTagScope tag = activations_of("output");
      nn::vocab_parallel_loss_backward(tp_, r.loss, w.value(), vocab_slice(w),
                                       r.labels.reshape({N}), grad_scale, nullptr, &w.grad());
    }
    norm_->backward_weight(r.dhn, r.layer_inputs.back(), r.rstd_norm);
    if (!tied()) hook(Hook::AfterBackward, head_unit());
  }
  for (size_t j = stage.layers.size(); j-- > 0;) {
    const size_t k = stage.layers[j];
    {
      const MemoryTagScope tag = activations_of(layer_name(k));
      layers_[k]->backward_weight(*r.layers[j]);
    }
    hook(Hook::AfterBackward, layer_unit(k));
  }
  if (stage.embedding) {
    nn::vocab_parallel_embedding_backward(tp_, r.tokens.reshape({N}), r.dx0,
                                          vocab_slice(*tok_embeddings_), tok_embeddings_->grad());
    hook(Hook::AfterBackward, embedding_unit());
  }
  release(r);
}

}  // namespace titan::models

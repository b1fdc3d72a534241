// A decoder-only language model with explicit forward and backward (torchtitan's Llama 3
// and DeepSeek V3 share this frame; what differs is the block, models/<family>/):
//   x0 = tok_embeddings[tokens]                        [B, T, D]
//   x_{i+1} = layers.i(x_i)                            (nn/decoder_block.h)
//   hn = norm(x_L)
//   loss_sum = sum over valid tokens of cross_entropy(hn output^T, labels)   (fused, chunked)
// The output projection is `output.weight` [V, D], or the embedding itself when the
// weights are tied; then one parameter receives both gradients. A family describes its model
// with a DecoderSpec: dimensions, its parallelization plan, a RoPE table and how to make
// block i.
//
// Initialization (torchtitan's, for both families): tok_embeddings normal(0, 1); norm 1;
// output trunc_normal(0, D^-1/2, +-3 D^-1/2); the blocks' own rules. A tied embedding takes
// the output's rule (torchtitan initializes the output last, over the shared tensor). Every
// value is a Philox function of (seed, parameter name, index).
//
// Tensor parallel (nn/tensor_parallel.h): the embedding and the output are vocab-parallel
// (nn/vocab_parallel.h), the blocks split heads and hidden dims as their family's plan says,
// and the residual stream x_i is the rank's n token rows of the N = B x T (n = N / tp with
// sequence parallelism, else N).
//
// Parameter units (nn/parameter_unit.h), in forward order: "tok_embeddings", "layers.0" ..
// "layers.<L-1>", "norm, output". With tied weights the embedding is also the output, so it
// and the final norm form one unit, "tok_embeddings, norm", in use from the first forward
// op to the last backward one (FSDP2's root unit).
//
// Context parallel (nn/context_parallel.h): forward takes whole sequences and keeps this
// rank's tokens and labels; the blocks work on those, attention reaching the other ranks'
// keys; the loss sum is over this rank's tokens.
//
// Pipeline stages (models/model.h): a model built for some stages holds only their modules
// (by torchtitan's names, models/pipeline_split.h) and only their units, in the same order;
// layer i keeps its name and its initialization whichever rank holds it. A tied output
// cannot leave the embedding's stage.
//
// Activation checkpointing (models/activation_checkpoint.h): a block that recomputes drops
// part of its record after its forward and restores it before its backward (after its
// unit's before_backward hook, so FSDP has gathered the weights).
//
// Placement: each parameter takes the placement its family's plan gives on the layout the
// model is built with (nn/placement.h).
//
// Device: the model lives on its layout's device (nn/parameter.h): parameters, the RoPE
// table, activations and workspaces. forward() takes tokens and labels on any device and
// copies them to the model's once per microbatch (the data loader's batches are host
// tensors); the loss sum is the one value it copies back to the host.
//
// Precision: activations (layer inputs and outputs, hn and every activation gradient) are
// in the placement's compute dtype, as the parameters' whole values are (nn/parameter.h);
// the norms' rstd, the log-sum-exp, the loss and the cross-entropy's logits stay f32, and
// so do the master weights, their gradients and the optimizer state.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/models/model.h"
#include "titan/models/pipeline_split.h"
#include "titan/nn/decoder_block.h"
#include "titan/nn/linear.h"
#include "titan/nn/parameter_unit.h"
#include "titan/nn/placement.h"
#include "titan/nn/vocab_parallel.h"

namespace titan::models {

// What a family tells the frame about its model.
struct DecoderSpec {
  std::string family;  // "llama3": names the model in messages
  int64_t dim = 0, vocab_size = 0, n_layers = 0;
  int64_t max_seq_len = 0;  // training.seq_len: the longest sequence forward takes
  double norm_eps = 1e-5;   // the final norm's
  bool weight_tying = false;
  config::AttentionMaskType attn_mask_type = config::AttentionMaskType::Causal;
  // The RoPE table of positions 0 .. max_seq_len - 1, [max_seq_len, rope dims / 2, 2] f32 on
  // the host (ops/rope.h); the model copies it to its device.
  Tensor rope;
  nn::ParallelPlan plan;
  // Block `layer` (its global index), its parameters placed by `placer`.
  std::function<std::unique_ptr<nn::DecoderBlock>(int layer, const nn::Placer& placer)>
      make_block;
};

// Everything one microbatch's forward keeps for its backward.
struct DecoderRecord final : ActivationRecord {
  Tensor tokens, labels;                 // [B, T]: this rank's tokens (T / cp of a sequence)
  nn::SequenceLayout sequence;           // RoPE rows and attention mask of those tokens
  // The stage's block inputs and its output, [n, D]: this rank's token rows (x_0 .. x_L
  // for a whole model).
  std::vector<Tensor> layer_inputs;
  std::vector<std::unique_ptr<nn::DecoderBlockRecord>> layers;  // of the stage's blocks
  Tensor hn, rstd_norm;                  // final norm output [n, D] and its rstd
  nn::VocabParallelLossRecord loss;      // all rows of hn, the log-sum-exp per token
  // Set by backward_input for backward_weight (the layers keep theirs in their records):
  Tensor dhn;                            // gradient at the final norm's output
  Tensor dx0;                            // gradient at the embedding's output
  int64_t bytes() const override;
};

class DecoderModel : public Model {
 public:
  // Every parameter holds only its box under the placement the plan gives it on `layout`
  // (nothing of the whole tensor), on layout.device. `stages`: the modules of each stage
  // the model holds (none: the whole model, one stage).
  DecoderModel(DecoderSpec spec, const nn::ParameterLayout& layout,
               const std::vector<StageModules>& stages);

  // Which blocks recompute what before their backward (models/activation_checkpoint.h);
  // none until set.
  void set_activation_checkpointing(const config::ActivationCheckpointSection& section);

  Device device() const override { return device_; }
  DType compute_dtype() const override { return compute_dtype_; }
  int64_t vocab_size() const override { return spec_.vocab_size; }
  // Every parameter once, in torchtitan's order of definition.
  std::vector<nn::Parameter*> parameters() override;
  nn::Parameter& output_weight();
  std::vector<nn::ParameterUnit> units() override;
  void set_unit_hooks(nn::UnitHooks* hooks) override { hooks_ = hooks; }
  int stage_count() const override { return int(stages_.size()); }
  std::vector<int> stage_units(int stage) const override;
  Shape stage_activation_shape(int64_t batch, int64_t seq_len) const override;

  void set_document_end(int32_t token) override { document_end_ = token; }
  std::unique_ptr<ActivationRecord> new_record() const override;
  // Sum over valid tokens (labels != -100) of the token losses; keeps the record (a
  // DecoderRecord).
  double forward(const Tensor& tokens, const Tensor& labels,
                 ActivationRecord& record) const override;
  // Logits [B, T, V] of a forward's record (tests, generation), on the model's device; not
  // used in training.
  Tensor logits(const ActivationRecord& record) const override;

  // Gradients of grad_scale * loss_sum, added into every parameter's grad. backward does
  // both halves layer by layer; backward_input then backward_weight do the same apart (the
  // input gradients of the whole model first), as a zero-bubble schedule splits them.
  void backward(ActivationRecord& record, float grad_scale) override;
  void backward_input(ActivationRecord& record, float grad_scale) override;
  void backward_weight(ActivationRecord& record, float grad_scale) override;

 protected:
  // The blocks this model holds, in stage order, and their global indices.
  const std::vector<std::unique_ptr<nn::DecoderBlock>>& blocks() const { return layers_; }
  const std::vector<int>& block_ids() const { return layer_ids_; }

 private:
  // The modules of one stage: the embedding, blocks (indices into layers_), the final
  // norm + output + loss ("head").
  struct Stage {
    bool embedding = false;
    std::vector<size_t> layers;
    bool head = false;
  };
  void output_backward_input(DecoderRecord& record, float grad_scale, Tensor& dh) const;
  // The gradient at the input of the record stage's block j, from `dout` at its output:
  // the block's unit hook, its record restored (activation checkpointing), backward_input.
  Tensor block_backward_input(DecoderRecord& record, size_t j, const Tensor& dout) const;
  // The output weight's rows in the vocabulary (all of it without tensor parallelism).
  ops::VocabSlice vocab_slice(const nn::Parameter& weight) const;
  const nn::Parameter& output() const { return output_ ? *output_ : *tok_embeddings_; }
  bool tied() const { return spec_.weight_tying; }
  // Unit indices of units(): the embedding's, layers_[k]'s, and the final norm + output's
  // (the embedding's own when tied).
  int embedding_unit() const { return 0; }
  int layer_unit(size_t k) const { return int(k) + (tok_embeddings_ ? 1 : 0); }
  int head_unit() const { return tied() ? 0 : layer_unit(layers_.size()); }
  std::string layer_name(size_t k) const { return "layers." + std::to_string(layer_ids_[k]); }
  // The stage the record runs (record.pipeline.stage, checked).
  const Stage& stage_of(const DecoderRecord& record) const;
  // Frees everything the record holds but its stage, pipeline.input_grad (the executor
  // takes that after the backward) and the deferred loss.
  static void release(DecoderRecord& record);
  enum class Hook { BeforeForward, AfterForward, BeforeBackward, AfterBackward };
  void hook(Hook hook, int unit) const;
  DecoderSpec spec_;
  std::vector<Stage> stages_;
  std::vector<int> layer_ids_;             // the global index of each of layers_
  std::vector<nn::Recompute> recompute_;   // of each of layers_
  Device device_;
  DType compute_dtype_;                    // of the weights' whole values and activations
  const nn::TensorParallel& tp_;
  const nn::ContextParallel& cp_;
  std::optional<int32_t> document_end_;    // set_document_end's, for block_causal
  std::unique_ptr<nn::Parameter> tok_embeddings_;  // null on stages without it
  std::vector<std::unique_ptr<nn::DecoderBlock>> layers_;  // the blocks the stages hold
  std::unique_ptr<nn::RmsNorm> norm_;              // null on stages without the head
  std::unique_ptr<nn::Parameter> output_;          // null when tied or without the head
  Tensor freqs_;                           // spec_.rope on the model's device
  nn::UnitHooks* hooks_ = nullptr;
};

}  // namespace titan::models

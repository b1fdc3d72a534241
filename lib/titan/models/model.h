// The model seam: what the trainer, generation and checkpoints need of a built model,
// whatever its family (torchtitan's model protocol). A family (models/<family>/) implements
// Model and ModelFamily (models/family.h); nothing outside models/ names a family.
//
//   std::unique_ptr<Model> model = model_family(config.model.name).build(config, layout);
//   model->initialize(seed);
//   std::unique_ptr<ActivationRecord> record = model->new_record();
//   double loss_sum = model->forward(tokens, labels, *record);     // [B, T] each
//   model->backward(*record, 1.0f / valid_tokens);                 // grads +=
//
// Explicit forward and split backward (no autograd): forward fills an activation record the
// caller owns (one per microbatch in flight); backward_input computes the input gradients
// of the whole model and leaves in the record what backward_weight needs; backward does both
// halves unit by unit (least memory) and gives bitwise the same gradients. Around each
// parameter unit's use the model calls the UnitHooks it was given (FSDP's gathers and
// reductions, nn/parameter_unit.h).
//
// Pipeline parallelism (train/pipeline.h) builds a rank's model from its stages' modules;
// record.pipeline names the stage each forward and backward runs and carries the
// activations between stages (see Model::stage_count below).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "titan/core/error.h"
#include "titan/core/tensor.h"
#include "titan/nn/parameter_unit.h"

namespace titan::models {

// A parameter's name (torchtitan's fully qualified one) and global shape.
struct ParameterShape {
  std::string name;
  Shape shape;
  bool operator==(const ParameterShape&) const = default;
};

// Model state that is no parameter (torchtitan's persistent buffers), by name: f32 host
// tensors, whole and equal on every rank that holds its layer.
struct NamedBuffer {
  std::string name;  // "layers.3.moe.expert_bias"
  Tensor value;      // the model's own tensor: a checkpoint load writes into it
};

// What passes in and out of one pipeline stage's forward and backward (train/pipeline.h).
// A whole model reads tokens and ends with the loss, so it uses none of them but `stage`.
struct StageTensors {
  int stage = 0;       // which of the model's stages (Model::stage_count()) runs
  Tensor input;        // forward's input, when the stage does not start with the embedding
  Tensor output;       // set by forward, when the stage does not end with the loss
  Tensor output_grad;  // backward's: the gradient at `output` (from the next stage)
  Tensor input_grad;   // set by backward(_input): the gradient at `input`
  // Set before forward by a caller that knows grad_scale then and will run backward (not
  // the split backward_input + backward_weight) on the record: the loss's forward waits
  // for the backward, which computes the loss and its gradients from one logits GEMM per
  // chunk instead of two (ops::cross_entropy_forward_backward; the same bits), so forward
  // returns 0 and backward leaves the loss sum in deferred_loss. No effect on a stage
  // without the loss.
  bool defer_loss = false;
  double deferred_loss = 0;
};

// What one microbatch's forward keeps for its backward; each family's record derives from
// it and knows its bytes.
struct ActivationRecord {
  virtual ~ActivationRecord() = default;
  virtual int64_t bytes() const = 0;
  StageTensors pipeline;
};

// `record` as the family's own record type (a record of another family is a bug).
template <class Record>
Record& record_as(ActivationRecord& record) {
  auto* own = dynamic_cast<Record*>(&record);
  TITAN_CHECK(own != nullptr) << "activation record of another model family";
  return *own;
}
template <class Record>
const Record& record_as(const ActivationRecord& record) {
  return record_as<Record>(const_cast<ActivationRecord&>(record));
}

class Model {
 public:
  virtual ~Model() = default;

  // Every parameter once, in the family's order of definition (checkpoints, the optimizer).
  virtual std::vector<nn::Parameter*> parameters() = 0;
  // The groups FSDP gathers and reduces together, in forward order.
  virtual std::vector<nn::ParameterUnit> units() = 0;
  // Called around every unit's use from now on; null for none. Not owned.
  virtual void set_unit_hooks(nn::UnitHooks* hooks) = 0;

  // Pipeline stages. A model built for some of the pipeline's stages (ModelFamily::build)
  // holds only their modules, and record.pipeline.stage says which one a forward or backward
  // runs: a stage without the embedding takes pipeline.input, one without the loss sets
  // pipeline.output and returns 0, and its backward takes pipeline.output_grad. A stage
  // that does not start with the embedding sets pipeline.input_grad in backward_input (or
  // backward). A whole model is one stage.
  virtual int stage_count() const = 0;
  virtual std::vector<int> stage_units(int stage) const = 0;  // indices into units()
  // The shape of the activation that passes between stages for a [batch, seq_len]
  // microbatch (in compute_dtype(), on device()).
  virtual Shape stage_activation_shape(int64_t batch, int64_t seq_len) const = 0;

  virtual Device device() const = 0;
  virtual DType compute_dtype() const = 0;  // of the weights' values and the activations
  virtual int64_t vocab_size() const = 0;

  // Per-document attention (ModelSummary::masks_documents): the token that ends each
  // document of the packed sequences (the data's EOS id); set before the first forward.
  virtual void set_document_end(int32_t token) = 0;

  virtual std::unique_ptr<ActivationRecord> new_record() const = 0;
  // Sum over valid tokens (labels != -100) of the token losses; fills the record. Tokens
  // and labels may be on any device (the data loader's are host tensors). Under context
  // parallelism every cp rank passes the whole sequences; the model takes its own tokens
  // (nn/context_parallel.h) and the sum is over those.
  virtual double forward(const Tensor& tokens, const Tensor& labels,
                         ActivationRecord& record) const = 0;
  // Logits [B, T, V] of a forward's record, on the model's device (generation, tests).
  virtual Tensor logits(const ActivationRecord& record) const = 0;
  // Gradients of grad_scale * loss_sum, added into every parameter's grad(); each releases
  // the record when it is done with it.
  virtual void backward(ActivationRecord& record, float grad_scale) = 0;
  virtual void backward_input(ActivationRecord& record, float grad_scale) = 0;
  virtual void backward_weight(ActivationRecord& record, float grad_scale) = 0;

  // Mixture-of-experts routing state (DeepSeek V3's load balancing, nn/moe.h): the picks
  // each expert of each MoE layer the model holds received since the last step, [layers,
  // experts] f32 on the host; undefined for a model without experts. Once per optimizer
  // step the trainer sums it over every data-parallel rank (so that every layout routes the
  // same) and hands the sum to update_routing, which moves the routing biases and clears
  // the counts.
  virtual Tensor expert_load() const { return {}; }
  virtual std::vector<int> expert_layer_ids() const { return {}; }  // of expert_load's rows
  virtual void update_routing(const Tensor& load) { (void)load; }
  // The buffers this model holds (of its stages), in ModelFamily::buffer_shapes order;
  // checkpoints save and load them under model/ beside the parameters.
  virtual std::vector<NamedBuffer> buffers() { return {}; }

  // Over parameters(): each fills its box from Philox under `seed` (the same model on every
  // mesh); gradients to zero; compute copies refreshed from the master shards (after an
  // optimizer step or a checkpoint load; nothing to do in f32).
  void initialize(uint64_t seed);
  void zero_grads();
  void update_compute_copies();
};

}  // namespace titan::models

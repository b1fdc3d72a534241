// Model families: what `model.name` selects (torchtitan's TrainSpec). A family knows its
// flavors, how its config keys make a model, how it builds on a mesh (its parallelization
// plan applied to the rank's layout), its parameters' names and shapes, its FLOPs per
// token, and how its state dict maps to Hugging Face's. The trainer, generation and the
// checkpoint tools reach a model only through these and models/model.h.
//
//   const ModelFamily& family = model_family(config.model.name);   // InputError if unknown
//   ModelSummary summary = family.summarize(config);              // InputError naming a key
//   std::unique_ptr<Model> model = family.build(config, mesh.parameter_layout(device, dtype));
//
// Adding a family is adding a folder models/<family>/ that implements ModelFamily and
// Model, and one line in models/registry.cpp (docs/architecture.md, "Model families").
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/core/tensor.h"
#include "titan/models/model.h"
#include "titan/models/pipeline_split.h"
#include "titan/nn/placement.h"

namespace titan::models {

// What the trainer logs and measures of a model before building it.
struct ModelSummary {
  std::string description;      // "llama3 tiny, 1,234 parameters (dim 64, 8 layers, ...)"
  int64_t parameters = 0;       // unique parameters (a tied output counts once)
  int64_t vocab_size = 0;
  int64_t layers = 0;           // transformer blocks: what pipeline stages split
  bool masks_documents = false; // attention within documents: needs Model::set_document_end
  double flops_per_token = 0;   // training FLOPs per token at training.seq_len
  int64_t routed_experts = 0;   // per MoE layer (Model::expert_load's columns); 0: none
};

// One microbatch's activations on one rank, for memory plans (train/memory_plan.h). Each
// list holds what the modules allocate, one entry per tensor (its bytes), so a plan can
// round every block as the allocator does.
struct ActivationShape {
  int64_t batch = 1;    // sequences in the microbatch
  int64_t seq_len = 1;  // training.seq_len: the whole sequence, before context parallelism
  int64_t tp = 1, cp = 1;
  bool sequence_parallel = false;
  DType dtype = DType::F32;  // the compute dtype (statistics stay f32)
};
struct ActivationMemory {
  // What a block's forward keeps for its backward, by nn::Recompute (None, Full, CheapOps);
  // its output included (the next block's input).
  std::vector<int64_t> block_kept[3];
  // What a block's backward adds while it runs, at its most (the gradient at its output
  // included); a recomputing block also remakes what it dropped.
  std::vector<int64_t> block_backward;
  // What a split backward (zero-bubble schedules) keeps from a block's input gradients
  // until its weight gradients run.
  std::vector<int64_t> block_weight_inputs;
  std::vector<int64_t> embedding_kept;  // the embedding's output
  std::vector<int64_t> head_kept;       // the final norm's and the loss's, for the backward
  std::vector<int64_t> head_backward;   // the loss's backward at its most (logits chunks)
  std::vector<int64_t> buffers;         // model state that is no parameter (a RoPE table)
};

// A family's state dict against Hugging Face's (torchtitan's StateDictAdapter): tensor
// names, value layouts that differ, and config.json.
class HfStateDictAdapter {
 public:
  virtual ~HfStateDictAdapter() = default;
  // config.json's model_type this family reads and writes ("llama").
  virtual std::string hf_model_type() const = 0;
  // The HF name of a parameter (or buffer), and back; nullopt for a name that is not one.
  virtual std::optional<std::string> to_hf_name(const std::string& name) const = 0;
  virtual std::optional<std::string> from_hf_name(const std::string& hf_name) const = 0;
  // The HF tensors a parameter (or buffer) is stored as: its one name, or, for a tensor HF
  // keeps as one tensor per row of its first dim (DeepSeek V3's experts [E, ...]), one name
  // per row, in order; the rows are stacked on import and split on export.
  virtual std::vector<std::string> to_hf_names(const std::string& name,
                                               const config::JobConfig& config) const {
    (void)config;
    return {to_hf_name(name).value()};
  }
  // An HF tensor that is no parameter of `config`'s model and that an import may skip
  // (buffers some exports carry, a tied model's lm_head).
  virtual bool skipped_on_import(const std::string& hf_name,
                                 const config::JobConfig& config) const = 0;
  // A parameter's value in HF's layout, and back (each the other's inverse); the value
  // itself where the layouts agree.
  virtual Tensor to_hf(const std::string& name, const Tensor& value,
                       const config::JobConfig& config) const = 0;
  virtual Tensor from_hf(const std::string& name, const Tensor& value,
                         const config::JobConfig& config) const = 0;
  // config.json for `config`'s model, its weights written in torch_dtype ("float32",
  // "bfloat16").
  virtual nlohmann::ordered_json hf_config(const config::JobConfig& config,
                                           const std::string& torch_dtype) const = 0;
  // The job config (model.name, the flavor `flavor` names or else the closest one,
  // model.* overrides, training.seq_len) whose model config.json describes. InputError
  // naming `origin` and the key for what the family cannot represent.
  virtual config::JobConfig job_config_from_hf(const nlohmann::json& config_json,
                                               const std::string& origin,
                                               const std::optional<std::string>& flavor) const = 0;
};

class ModelFamily {
 public:
  virtual ~ModelFamily() = default;
  virtual std::string name() const = 0;                  // model.name: "llama3"
  virtual std::vector<std::string> flavors() const = 0;  // model.flavor's values
  // Checks model.* and training.seq_len (InputError naming the key) and summarizes.
  virtual ModelSummary summarize(const config::JobConfig& config) const = 0;
  // Every parameter with its global shape, in Model::parameters() order: what a checkpoint
  // of this model holds under model/, and what an HF export writes.
  virtual std::vector<ParameterShape> parameter_shapes(const config::JobConfig& config) const = 0;
  // Every persistent buffer of the whole model with its shape (Model::buffers()): none for
  // most families; DeepSeek V3's routing biases.
  virtual std::vector<ParameterShape> buffer_shapes(const config::JobConfig& config) const {
    (void)config;
    return {};
  }
  // The parallelization plan: each parameter's placement rule (nn/placement.h).
  virtual nn::ParallelPlan parallel_plan(const config::JobConfig& config,
                                         const nn::ParameterLayout& layout) const = 0;
  // The modules of each of `stages` pipeline stages, in order (torchtitan's
  // module_fqns_per_model_part): parallelism.module_fqns_per_model_part when set (checked),
  // else the family's split (models/pipeline_split.h). InputError naming the key when the
  // modules do not split that way.
  virtual std::vector<StageModules> pipeline_stages(const config::JobConfig& config,
                                                    int stages) const = 0;
  // The model, every parameter holding its box under the plan on `layout`, uninitialized:
  // the whole model, or only the modules of `stages` (this rank's pipeline stages, each a
  // list of pipeline_stages()), one model stage each.
  virtual std::unique_ptr<Model> build(const config::JobConfig& config,
                                       const nn::ParameterLayout& layout,
                                       const std::vector<StageModules>& stages = {}) const = 0;
  virtual const HfStateDictAdapter& hf_adapter() const = 0;

  // Memory plans (train/memory_plan.h): the FSDP unit a parameter belongs to ("layers.3"),
  // as the model's units() groups them, and a microbatch's activations.
  virtual std::string fsdp_unit_of(const config::JobConfig& config,
                                   const std::string& parameter) const = 0;
  virtual ActivationMemory activation_memory(const config::JobConfig& config,
                                             const ActivationShape& shape) const = 0;
};

}  // namespace titan::models

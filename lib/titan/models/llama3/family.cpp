#include "titan/models/llama3/family.h"

#include <cstdio>

#include "titan/models/llama3/args.h"
#include "titan/models/llama3/hf_adapter.h"
#include "titan/models/llama3/memory.h"
#include "titan/models/llama3/model.h"
#include "titan/models/llama3/parallelize.h"

namespace titan::models::llama3 {
namespace {

class Llama3Family final : public ModelFamily {
 public:
  std::string name() const override { return "llama3"; }

  std::vector<std::string> flavors() const override {
    std::vector<std::string> names;
    for (const Flavor& f : llama3_flavors()) names.push_back(f.name);
    return names;
  }

  ModelSummary summarize(const config::JobConfig& config) const override {
    const ModelArgs a = model_args_from_config(config);
    check_tensor_parallel(a, config.parallelism.tensor_parallel_degree);
    TITAN_CHECK_INPUT(config.parallelism.expert_parallel_degree == 1)
        << "parallelism.expert_parallel_degree " << config.parallelism.expert_parallel_degree
        << ": llama3 has no experts to split; set it to 1";
    TITAN_CHECK_INPUT(config.parallelism.expert_tensor_parallel_degree == 1)
        << "parallelism.expert_tensor_parallel_degree "
        << config.parallelism.expert_tensor_parallel_degree
        << ": llama3 has no experts to split; set it to 1";
    const ParameterCounts counts = count_parameters(a);
    char text[256];
    std::snprintf(text, sizeof text,
                  "llama3 %s, %lld parameters (dim %lld, %lld layers, %lld heads, %lld kv heads, "
                  "ffn %lld, vocab %lld%s%s)",
                  config.model.flavor.c_str(), (long long)counts.total, (long long)a.dim,
                  (long long)a.n_layers, (long long)a.n_heads, (long long)a.n_kv_heads,
                  (long long)a.hidden_dim(), (long long)a.vocab_size,
                  a.weight_tying ? ", output tied to the embedding" : "",
                  a.attn_mask_type == config::AttentionMaskType::BlockCausal
                      ? ", attention within documents"
                      : "");
    ModelSummary summary;
    summary.description = text;
    summary.parameters = counts.total;
    summary.vocab_size = a.vocab_size;
    summary.layers = a.n_layers;
    summary.masks_documents = a.attn_mask_type == config::AttentionMaskType::BlockCausal;
    summary.flops_per_token = flops_per_token(a, config.training.seq_len);
    return summary;
  }

  std::vector<ParameterShape> parameter_shapes(const config::JobConfig& config) const override {
    return llama3::parameter_shapes(model_args_from_config(config));
  }

  nn::ParallelPlan parallel_plan(const config::JobConfig& config,
                                 const nn::ParameterLayout& layout) const override {
    return llama3::parallel_plan(model_args_from_config(config), layout.tp.size);
  }

  std::vector<StageModules> pipeline_stages(const config::JobConfig& config,
                                            int stages) const override {
    const ModelArgs a = model_args_from_config(config);
    const config::ParallelismSection& p = config.parallelism;
    TITAN_CHECK_INPUT(!a.weight_tying || stages == 1)
        << "parallelism.pipeline_parallel_degree: flavor " << config.model.flavor
        << " ties the output to the embedding, which pipeline stages would split; use a "
        << "flavor without tied weights or pipeline_parallel_degree 1";
    return decoder_stages_for_job(p, int(a.n_layers), stages);
  }

  std::unique_ptr<Model> build(const config::JobConfig& config, const nn::ParameterLayout& layout,
                               const std::vector<StageModules>& stages) const override {
    auto model = std::make_unique<Llama3Model>(model_args_from_config(config), layout, stages);
    model->set_activation_checkpointing(config.activation_checkpoint);
    return model;
  }

  const HfStateDictAdapter& hf_adapter() const override { return adapter_; }

  std::string fsdp_unit_of(const config::JobConfig& config,
                           const std::string& parameter) const override {
    return llama3::fsdp_unit_of(model_args_from_config(config), parameter);
  }

  ActivationMemory activation_memory(const config::JobConfig& config,
                                     const ActivationShape& shape) const override {
    return llama3::activation_memory(model_args_from_config(config), shape,
                                     !config.parallelism.disable_loss_parallel);
  }

 private:
  HfAdapter adapter_;
};

}  // namespace

const ModelFamily& family() {
  static const Llama3Family llama3;
  return llama3;
}

}  // namespace titan::models::llama3

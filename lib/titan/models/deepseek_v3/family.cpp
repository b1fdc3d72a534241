#include "titan/models/deepseek_v3/family.h"

#include <cstdio>

#include "titan/models/deepseek_v3/args.h"
#include "titan/models/deepseek_v3/hf_adapter.h"
#include "titan/models/deepseek_v3/memory.h"
#include "titan/models/deepseek_v3/model.h"

namespace titan::models::deepseek_v3 {
namespace {

void check_layout(const config::JobConfig& config) {
  const config::ParallelismSection& p = config.parallelism;
  const ModelArgs a = model_args_from_config(config);
  TITAN_CHECK_INPUT(a.num_experts % p.expert_parallel_degree == 0)
      << "parallelism.expert_parallel_degree " << p.expert_parallel_degree << ": the "
      << a.num_experts << " experts of flavor " << config.model.flavor
      << " do not split evenly over it; use a divisor of " << a.num_experts;
  const int64_t tp = p.tensor_parallel_degree;
  TITAN_CHECK_INPUT(a.n_heads % tp == 0)
      << "parallelism.tensor_parallel_degree " << tp << ": the " << a.n_heads << " heads of "
      << "flavor " << config.model.flavor << " do not split over it; use a divisor of "
      << a.n_heads;
  const int64_t etp = p.expert_tensor_parallel_degree;
  TITAN_CHECK_INPUT(etp == 1 || etp == tp)
      << "parallelism.expert_tensor_parallel_degree " << etp << ": experts split over the "
      << "tensor-parallel ranks or none; set it to 1 or to tensor_parallel_degree " << tp;
  TITAN_CHECK_INPUT(tp == 1 || etp == tp || p.expert_parallel_degree == 1 ||
                    p.enable_sequence_parallel)
      << "parallelism.expert_parallel_degree " << p.expert_parallel_degree << " with "
      << "tensor_parallel_degree " << tp << " needs parallelism.enable_sequence_parallel "
      << "(each tp rank routes its own rows of the sequence) or "
      << "expert_tensor_parallel_degree " << tp;
}

class DeepSeekV3Family final : public ModelFamily {
 public:
  std::string name() const override { return "deepseek_v3"; }

  std::vector<std::string> flavors() const override {
    std::vector<std::string> names;
    for (const Flavor& f : deepseek_v3_flavors()) names.push_back(f.name);
    return names;
  }

  ModelSummary summarize(const config::JobConfig& config) const override {
    const ModelArgs a = model_args_from_config(config);
    check_layout(config);
    const ParameterCounts counts = count_parameters(a);
    char text[320];
    std::snprintf(text, sizeof text,
                  "deepseek_v3 %s, %lld parameters, %lld active (dim %lld, %lld layers of which "
                  "%lld dense, %lld heads, %lld routed experts top %lld + %lld shared, vocab "
                  "%lld%s)",
                  config.model.flavor.c_str(), (long long)counts.total, (long long)counts.active,
                  (long long)a.dim, (long long)a.n_layers,
                  (long long)(a.n_layers - a.moe_layers()), (long long)a.n_heads,
                  (long long)a.num_experts, (long long)a.top_k, (long long)a.num_shared_experts,
                  (long long)a.vocab_size,
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
    summary.routed_experts = a.moe_layers() > 0 ? a.num_experts : 0;
    return summary;
  }

  std::vector<ParameterShape> parameter_shapes(const config::JobConfig& config) const override {
    return deepseek_v3::parameter_shapes(model_args_from_config(config));
  }

  std::vector<ParameterShape> buffer_shapes(const config::JobConfig& config) const override {
    return deepseek_v3::buffer_shapes(model_args_from_config(config));
  }

  nn::ParallelPlan parallel_plan(const config::JobConfig& config,
                                 const nn::ParameterLayout& layout) const override {
    check_layout(config);
    return deepseek_v3::parallel_plan(layout);
  }

  std::vector<StageModules> pipeline_stages(const config::JobConfig& config,
                                            int stages) const override {
    return decoder_stages_for_job(config.parallelism,
                                  int(model_args_from_config(config).n_layers), stages);
  }

  std::unique_ptr<Model> build(const config::JobConfig& config, const nn::ParameterLayout& layout,
                               const std::vector<StageModules>& stages) const override {
    check_layout(config);
    auto model = std::make_unique<DeepSeekV3Model>(model_args_from_config(config), layout, stages);
    model->set_activation_checkpointing(config.activation_checkpoint);
    return model;
  }

  const HfStateDictAdapter& hf_adapter() const override { return *adapter_; }

  std::string fsdp_unit_of(const config::JobConfig&, const std::string& parameter) const override {
    return deepseek_v3::fsdp_unit_of(parameter);
  }

  ActivationMemory activation_memory(const config::JobConfig& config,
                                     const ActivationShape& shape) const override {
    return deepseek_v3::activation_memory(model_args_from_config(config), shape);
  }

 private:
  std::unique_ptr<HfStateDictAdapter> adapter_ = make_hf_adapter();
};

}  // namespace

const ModelFamily& family() {
  static const DeepSeekV3Family deepseek_v3;
  return deepseek_v3;
}

}  // namespace titan::models::deepseek_v3

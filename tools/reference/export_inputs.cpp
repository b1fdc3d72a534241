// export_reference_inputs: writes the input folder of the PyTorch reference of the job's
// model family (tools/reference/README.md, "Input folder"; llama3_reference.py or
// deepseek_v3_reference.py) from a titan.cpp job config: the model's own Philox
// initialization, the batches the trainer would read, and the settings, so that the golden
// data describes exactly what titan-train does.
//
//   export_reference_inputs --config job.yaml --job.dump_folder OUT [--section.key value ...]
//
// OUT receives config.json, init.safetensors, batch.safetensors and job.yaml (the merged
// config, which the golden test loads back).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "titan/ckpt/safetensors.h"
#include "titan/config/load.h"
#include "titan/core/copy.h"
#include "titan/data/sources.h"
#include "titan/models/deepseek_v3/args.h"
#include "titan/models/family.h"
#include "titan/models/llama3/args.h"
#include "titan/models/registry.h"
#include "titan/train/trainer.h"

using namespace titan;

namespace {

// The training keys every reference reads.
void add_training(nlohmann::json& j, const config::JobConfig& c, int64_t accumulation_steps) {
  const config::LrSchedulerSection& lr = c.lr_scheduler;
  j["batch_size"] = c.training.local_batch_size;
  j["seq_len"] = c.training.seq_len;
  j["accumulation_steps"] = accumulation_steps;
  j["steps"] = c.training.steps;
  j["lr"] = c.optimizer.lr;
  j["beta1"] = c.optimizer.beta1;
  j["beta2"] = c.optimizer.beta2;
  j["eps"] = c.optimizer.eps;
  j["weight_decay"] = c.optimizer.weight_decay;
  j["warmup_steps"] = lr.warmup_steps;
  j["decay_ratio"] = lr.decay_ratio ? nlohmann::json(*lr.decay_ratio) : nlohmann::json();
  j["decay_type"] = std::string(config::choice_name(lr.decay_type));
  j["min_lr_factor"] = lr.min_lr_factor;
  j["max_norm"] = c.training.max_norm;
  j["flavor"] = c.model.flavor;
  j["seed"] = c.debug.effective_seed();
  j["source"] = "titan.cpp tools/reference/export_inputs.cpp";
}

// deepseek_v3_reference.py's config.json (tools/reference/README.md, "DeepSeek V3").
nlohmann::json deepseek_v3_config(const config::JobConfig& c, int64_t accumulation_steps) {
  const models::deepseek_v3::ModelArgs a = models::deepseek_v3::model_args_from_config(c);
  nlohmann::json j;
  j["dim"] = a.dim;
  j["n_layers"] = a.n_layers;
  j["n_dense_layers"] = a.n_dense_layers;
  j["n_heads"] = a.n_heads;
  j["vocab_size"] = a.vocab_size;
  j["inter_dim"] = a.inter_dim;
  j["moe_inter_dim"] = a.moe_inter_dim;
  j["q_lora_rank"] = a.q_lora_rank;
  j["kv_lora_rank"] = a.kv_lora_rank;
  j["qk_nope_head_dim"] = a.qk_nope_head_dim;
  j["qk_rope_head_dim"] = a.qk_rope_head_dim;
  j["v_head_dim"] = a.v_head_dim;
  j["norm_eps"] = a.norm_eps;
  j["rope_theta"] = a.rope_theta;
  j["rope_factor"] = a.rope_factor;
  j["beta_fast"] = a.beta_fast;
  j["beta_slow"] = a.beta_slow;
  j["original_seq_len"] = a.original_seq_len;
  j["mscale"] = a.mscale;
  j["num_experts"] = a.num_experts;
  j["num_shared_experts"] = a.num_shared_experts;
  j["top_k"] = a.top_k;
  j["score_func"] = a.score_func == ops::RouterScore::Sigmoid ? "sigmoid" : "softmax";
  j["route_norm"] = a.route_norm;
  j["route_scale"] = a.route_scale;
  j["score_before_experts"] = a.score_before_experts;
  j["n_expert_groups"] = a.n_expert_groups;
  j["n_limited_groups"] = a.n_limited_groups;
  j["load_balance_coeff"] =
      a.load_balance_coeff ? nlohmann::json(*a.load_balance_coeff) : nlohmann::json();
  add_training(j, c, accumulation_steps);
  return j;
}

nlohmann::json llama3_config(const config::JobConfig& c, int64_t accumulation_steps,
                             std::optional<int32_t> eos_id) {
  const models::llama3::ModelArgs a = models::llama3::model_args_from_config(c);
  nlohmann::json j;
  j["dim"] = a.dim;
  j["n_layers"] = a.n_layers;
  j["n_heads"] = a.n_heads;
  j["n_kv_heads"] = a.n_kv_heads;
  j["vocab_size"] = a.vocab_size;
  j["ffn_dim"] = a.hidden_dim();
  j["norm_eps"] = a.norm_eps;
  j["rope_theta"] = a.rope_theta;
  j["rope_scaling"] = {{"enabled", a.rope_scaling.enabled},
                       {"factor", a.rope_scaling.factor},
                       {"low_freq_factor", a.rope_scaling.low_freq_factor},
                       {"high_freq_factor", a.rope_scaling.high_freq_factor},
                       {"original_max_positions", a.rope_scaling.original_max_positions}};
  j["weight_tying"] = a.weight_tying;
  add_training(j, c, accumulation_steps);
  j["attn_mask_type"] = std::string(config::choice_name(a.attn_mask_type));
  if (a.attn_mask_type == config::AttentionMaskType::BlockCausal) {
    TITAN_CHECK_INPUT(eos_id) << "model.attn_mask_type block_causal: the data has no EOS id; "
                              << "export from a tokenized dataset (training.dataset_path)";
    j["eos_id"] = *eos_id;
  }
  // Float8 linears (model.converters quantize.linear.float8): the recipe, tensorwise when
  // unset, or null when the converter is off; the filter applies only when it is on.
  const config::StringList& converters = c.model.converters;
  const config::LinearFloat8Section& float8 = c.quantize.linear.float8;
  if (std::find(converters.begin(), converters.end(), "quantize.linear.float8") !=
      converters.end()) {
    j["float8_recipe"] = std::string(
        config::choice_name(float8.recipe_name.value_or(config::Float8Recipe::Tensorwise)));
  } else {
    j["float8_recipe"] = nullptr;
  }
  j["float8_filter_fqns"] = float8.filter_fqns;
  return j;
}

int run(int argc, char** argv) {
  const config::CommandLine cli = config::parse_command_line(argc, argv);
  const config::JobConfig& c = cli.config;
  const int64_t accumulation = train::accumulation_steps_for(c);
  const models::ModelFamily& family = models::model_family(c.model.name);
  const int64_t vocab_size = family.summarize(c).vocab_size;
  const std::unique_ptr<models::Model> model = family.build(c, nn::ParameterLayout{});
  model->initialize(c.debug.effective_seed());

  const std::filesystem::path out = c.job.dump_folder;
  std::filesystem::create_directories(out);
  std::vector<std::pair<std::string, Tensor>> init;
  for (nn::Parameter* p : model->parameters()) init.emplace_back(p->name(), p->value());
  ckpt::write_safetensors((out / "init.safetensors").string(), init);

  // The batches, in the order the trainer reads them: step-major, then microbatch.
  const int64_t S = c.training.steps, B = c.training.local_batch_size, T = c.training.seq_len;
  std::unique_ptr<data::BatchSource> source = data::make_batch_source(c, vocab_size);
  Tensor tokens = Tensor::empty({S, accumulation, B, T}, DType::I64);
  Tensor labels = Tensor::empty({S, accumulation, B, T}, DType::I64);
  for (int64_t i = 0; i < S * accumulation; ++i) {
    const data::TokenBatch batch = source->next();
    Tensor token_row = tokens.reshape({S * accumulation, B, T}).narrow(i, 1).reshape({B, T});
    Tensor label_row = labels.reshape({S * accumulation, B, T}).narrow(i, 1).reshape({B, T});
    copy_tensor(batch.inputs, token_row);
    copy_tensor(batch.labels, label_row);
  }
  ckpt::write_safetensors((out / "batch.safetensors").string(), {{"tokens", tokens}, {"labels", labels}});

  const nlohmann::json reference = c.model.name == "deepseek_v3"
                                       ? deepseek_v3_config(c, accumulation)
                                       : llama3_config(c, accumulation, source->document_end());
  std::ofstream((out / "config.json")) << reference.dump(2) << "\n";
  // The reference computes in float32, and so must the golden test's trainer: written out,
  // bfloat16 (the key's default) would be a given choice and compute in bf16 on a CPU with
  // AVX512_BF16 (train::compute_dtype_for).
  config::JobConfig written = c;
  written.training.mixed_precision_param = config::Precision::Float32;
  std::ofstream((out / "job.yaml")) << config::to_yaml(written);
  std::fprintf(stderr, "export_reference_inputs: wrote %s\n", out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

#include "titan/models/deepseek_v3/model.h"

#include <cstring>
#include <limits>

#include "titan/core/copy.h"
#include "titan/models/deepseek_v3/block.h"
#include "titan/ops/rope.h"

namespace titan::models::deepseek_v3 {
namespace {

DecoderSpec decoder_spec(const ModelArgs& args, const nn::ParameterLayout& layout) {
  DecoderSpec spec;
  spec.family = "deepseek_v3";
  spec.dim = args.dim;
  spec.vocab_size = args.vocab_size;
  spec.n_layers = args.n_layers;
  spec.max_seq_len = args.max_seq_len;
  spec.norm_eps = std::numeric_limits<float>::epsilon();
  spec.attn_mask_type = args.attn_mask_type;
  const MemoryTagScope tag("buffers");  // the RoPE table: state that is not a parameter
  spec.rope = Tensor::empty({args.max_seq_len, args.qk_rope_head_dim / 2, 2}, DType::F32);
  ops::YarnScaling yarn;
  yarn.enabled = args.yarn();
  yarn.factor = args.rope_factor;
  yarn.beta_fast = args.beta_fast;
  yarn.beta_slow = args.beta_slow;
  yarn.original_seq_len = double(args.original_seq_len);
  ops::yarn_rope_table(args.qk_rope_head_dim, args.rope_theta, yarn, 0, spec.rope);
  spec.plan = parallel_plan(layout);
  spec.make_block = [args](int layer, const nn::Placer& placer) {
    return std::make_unique<Block>(layer, args, placer);
  };
  return spec;
}

}  // namespace

nn::ParallelPlan parallel_plan(const nn::ParameterLayout& layout) {
  // Without expert parallelism the experts' weights [E, ...] are sharded by FSDP over their
  // first dim like every other weight (FSDP2's placement of experts without EP).
  const bool expert_parallel = layout.ep.size > 1;
  const bool expert_tensor_parallel = layout.expert_tensor_parallel && layout.tp.size > 1;
  return [expert_parallel, expert_tensor_parallel](const std::string& name) {
    auto ends_with = [&](const std::string& tail) {
      return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(),
                                                        tail) == 0;
    };
    nn::ParameterPlan plan;
    plan.expert = expert_parallel && name.find(".moe.experts.") != std::string::npos;
    // torchtitan's tensor-parallel plan: vocab-parallel embedding and output, the heads'
    // projections column-parallel and wo row-parallel, the dense feed-forward as Llama's;
    // the query rank's and the latent's projections and norms, the router and the shared
    // experts replicated, the routed experts too unless split by expert tensor parallelism.
    for (const char* column : {"tok_embeddings.weight", "output.weight", "attention.wq.weight",
                               "attention.wq_b.weight", "attention.wkv_b.weight",
                               "feed_forward.w1.weight", "feed_forward.w3.weight"}) {
      if (ends_with(column)) plan.tp_shard_dim = 0;
    }
    if (ends_with("attention.wo.weight") || ends_with("feed_forward.w2.weight")) {
      plan.tp_shard_dim = 1;
    }
    if (expert_tensor_parallel && name.find(".moe.experts.") != std::string::npos) {
      plan.tp_shard_dim = ends_with(".w2") ? 2 : 1;  // the hidden dim F
    }
    return plan;
  };
}

std::vector<ParameterShape> parameter_shapes(const ModelArgs& a) {
  const int64_t D = a.dim, H = a.n_heads, qk = a.qk_head_dim(), E = a.num_experts;
  std::vector<ParameterShape> shapes = {{"tok_embeddings.weight", {a.vocab_size, D}}};
  for (int64_t i = 0; i < a.n_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    if (a.q_lora_rank == 0) {
      shapes.push_back({p + "attention.wq.weight", {H * qk, D}});
    } else {
      shapes.insert(shapes.end(), {{p + "attention.wq_a.weight", {a.q_lora_rank, D}},
                                   {p + "attention.q_norm.weight", {a.q_lora_rank}},
                                   {p + "attention.wq_b.weight", {H * qk, a.q_lora_rank}}});
    }
    shapes.insert(
        shapes.end(),
        {{p + "attention.wkv_a.weight", {a.kv_lora_rank + a.qk_rope_head_dim, D}},
         {p + "attention.kv_norm.weight", {a.kv_lora_rank}},
         {p + "attention.wkv_b.weight", {H * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank}},
         {p + "attention.wo.weight", {D, H * a.v_head_dim}},
         {p + "attention_norm.weight", {D}},
         {p + "ffn_norm.weight", {D}}});
    if (!a.is_moe_layer(i)) {
      const int64_t F = a.inter_dim;
      shapes.insert(shapes.end(), {{p + "feed_forward.w1.weight", {F, D}},
                                   {p + "feed_forward.w2.weight", {D, F}},
                                   {p + "feed_forward.w3.weight", {F, D}}});
      continue;
    }
    const int64_t F = a.moe_inter_dim, S = a.num_shared_experts * F;
    shapes.insert(shapes.end(), {{p + "moe.experts.w1", {E, F, D}},
                                 {p + "moe.experts.w2", {E, D, F}},
                                 {p + "moe.experts.w3", {E, F, D}},
                                 {p + "moe.router.gate.weight", {E, D}}});
    if (S > 0) {
      shapes.insert(shapes.end(), {{p + "moe.shared_experts.w1.weight", {S, D}},
                                   {p + "moe.shared_experts.w2.weight", {D, S}},
                                   {p + "moe.shared_experts.w3.weight", {S, D}}});
    }
  }
  shapes.push_back({"norm.weight", {D}});
  shapes.push_back({"output.weight", {a.vocab_size, D}});
  return shapes;
}

std::vector<ParameterShape> buffer_shapes(const ModelArgs& a) {
  std::vector<ParameterShape> shapes;
  if (!a.load_balance_coeff) return shapes;
  for (int64_t i = 0; i < a.n_layers; ++i) {
    if (a.is_moe_layer(i)) {
      shapes.push_back({"layers." + std::to_string(i) + ".moe.expert_bias", {a.num_experts}});
    }
  }
  return shapes;
}

DeepSeekV3Model::DeepSeekV3Model(const ModelArgs& args, const nn::ParameterLayout& layout,
                                 const std::vector<StageModules>& stages)
    : DecoderModel(decoder_spec(args, layout), layout, stages), args_(args) {
  for (size_t k = 0; k < blocks().size(); ++k) {
    if (nn::Moe* moe = static_cast<Block&>(*blocks()[k]).moe()) {
      moe_.push_back(moe);
      moe_ids_.push_back(block_ids()[k]);
    }
  }
}

Tensor DeepSeekV3Model::expert_load() const {
  if (moe_.empty()) return {};
  const int64_t E = args_.num_experts;
  Tensor load = Tensor::empty({int64_t(moe_.size()), E}, DType::F32);
  for (size_t i = 0; i < moe_.size(); ++i) {
    Tensor row = load.narrow(int64_t(i), 1).reshape({E});
    copy_tensor(moe_[i]->load(), row);
  }
  return load;
}

std::vector<NamedBuffer> DeepSeekV3Model::buffers() {
  std::vector<NamedBuffer> named;
  for (size_t i = 0; i < moe_.size(); ++i) {
    if (moe_[i]->bias().defined()) {
      named.push_back({"layers." + std::to_string(moe_ids_[i]) + ".moe.expert_bias",
                       moe_[i]->bias()});
    }
  }
  return named;
}

void DeepSeekV3Model::update_routing(const Tensor& load) {
  const int64_t E = args_.num_experts;
  TITAN_CHECK(load.shape() == (Shape{int64_t(moe_.size()), E}) && load.device().is_cpu())
      << "update_routing: load " << shape_string(load.shape()) << " for " << moe_.size()
      << " MoE layers of " << E << " experts";
  for (size_t i = 0; i < moe_.size(); ++i) moe_[i]->update_bias(load.data<float>() + i * E);
}

}  // namespace titan::models::deepseek_v3

// The DeepSeek V3 decoder (torchtitan's deepseek_v3 model): the decoder frame
// (models/decoder_model.h) with DeepSeek's block (block.h: multi-head latent attention and
// a dense or mixture-of-experts feed-forward), RoPE with YaRN over qk_rope_head_dim, and
// torchtitan's final norm, whose eps is float32's (torchtitan builds it without one).
//
// The mixture-of-experts layers' routing state: expert_load() gives the picks each held
// MoE layer's experts received since the last step; the trainer sums it over every
// data-parallel rank and passes it to update_routing (nn/moe.h, load balancing).
#pragma once

#include <vector>

#include "titan/models/decoder_model.h"
#include "titan/models/deepseek_v3/args.h"
#include "titan/nn/moe.h"

namespace titan::models::deepseek_v3 {

// The parallelization plan on `layout`: torchtitan's tensor-parallel layout
// (nn/latent_attention.h, nn/moe.h), FSDP's rows; under expert parallelism the experts'
// weights split over ep and their own FSDP (efsdp); under expert tensor parallelism their
// hidden dim over tp (w1, w3 [E, F, D] Shard(1), w2 [E, D, F] Shard(2)).
nn::ParallelPlan parallel_plan(const nn::ParameterLayout& layout);

// Every parameter with its global shape, in DeepSeekV3Model::parameters() order.
std::vector<ParameterShape> parameter_shapes(const ModelArgs& args);
// The routing biases "layers.<i>.moe.expert_bias" [E] of the MoE layers (none without load
// balancing), in DeepSeekV3Model::buffers() order.
std::vector<ParameterShape> buffer_shapes(const ModelArgs& args);

class DeepSeekV3Model final : public DecoderModel {
 public:
  explicit DeepSeekV3Model(const ModelArgs& args, const nn::ParameterLayout& layout = {},
                           const std::vector<StageModules>& stages = {});
  const ModelArgs& args() const { return args_; }

  Tensor expert_load() const override;
  std::vector<int> expert_layer_ids() const override { return moe_ids_; }
  void update_routing(const Tensor& load) override;
  std::vector<NamedBuffer> buffers() override;
  // The held MoE layers, in order (the rows of expert_load()).
  const std::vector<nn::Moe*>& moe_layers() const { return moe_; }

 private:
  ModelArgs args_;
  std::vector<nn::Moe*> moe_;
  std::vector<int> moe_ids_;
};

}  // namespace titan::models::deepseek_v3

// The Llama 3 / 3.1 decoder (torchtitan's model): the decoder frame (models/decoder_model.h)
// with Llama's block (nn/transformer_block.h), RoPE with Llama 3.1's scaling over the head
// dim, and the plan of parallelize.h.
//
// Initialization (torchtitan's init_weights) of the blocks: wq, wk, wv, w1
// trunc_normal(0, 0.02, +-2); wo, w2, w3 trunc_normal(0, 0.02 / sqrt(2 (layer + 1)), +-2);
// norms 1.
#pragma once

#include <vector>

#include "titan/models/decoder_model.h"
#include "titan/models/llama3/args.h"

namespace titan::models::llama3 {

using ModelRecord = DecoderRecord;

// Every parameter with its global shape, in Llama3Model::parameters() order (a test holds
// the two together): what a checkpoint holds under model/ and an HF export writes.
std::vector<ParameterShape> parameter_shapes(const ModelArgs& args);

class Llama3Model final : public DecoderModel {
 public:
  // Every parameter holds only its box under the placement the plan gives it on `layout`;
  // `stages`: the modules of each stage the model holds (none: the whole model).
  explicit Llama3Model(const ModelArgs& args, const nn::ParameterLayout& layout = {},
                       const std::vector<StageModules>& stages = {});
  const ModelArgs& args() const { return args_; }

 private:
  ModelArgs args_;
};

}  // namespace titan::models::llama3

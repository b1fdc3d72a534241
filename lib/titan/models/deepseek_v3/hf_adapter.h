// Hugging Face DeepSeek V3 (DeepseekV3ForCausalLM, DeepSeek's published checkpoints) <->
// titan.cpp's deepseek_v3: tensor names, the routed experts (one HF tensor per expert, one
// titan.cpp tensor [E, ...] per layer), the routing bias and config.json, behind the
// family's HfStateDictAdapter (models/family.h). The published weights' FP8 blocks are the
// import's (ckpt/hdf5/hf_convert.h); the values themselves need no reordering: HF's
// DeepSeek V3 keeps the interleaved RoPE pairs that torchtitan rotates.
//
// Names (layers.N. <-> model.layers.N.):
//   tok_embeddings.weight, norm.weight, output.weight  model.embed_tokens, model.norm, lm_head
//   attention.wq | wq_a | q_norm | wq_b               self_attn.q_proj | q_a_proj |
//                                                     q_a_layernorm | q_b_proj
//   attention.wkv_a | kv_norm | wkv_b | wo            self_attn.kv_a_proj_with_mqa |
//                                                     kv_a_layernorm | kv_b_proj | o_proj
//   attention_norm, ffn_norm                          input_layernorm, post_attention_layernorm
//   feed_forward.w1 | w3 | w2                         mlp.gate_proj | up_proj | down_proj
//   moe.router.gate                                   mlp.gate
//   moe.shared_experts.w1 | w3 | w2                   mlp.shared_experts.gate_proj | up_proj |
//                                                     down_proj
//   moe.experts.w1 | w3 | w2  [E, ...]                mlp.experts.J.gate_proj | up_proj |
//                                                     down_proj, J < E (one per expert)
//   moe.expert_bias (a buffer)                        mlp.gate.e_score_correction_bias
// (".weight" on every name but the experts' stacked tensors and the bias.) Layers from
// num_hidden_layers on (the published multi-token-prediction module) are skipped on import.
#pragma once

#include <memory>

#include "titan/models/family.h"

namespace titan::models::deepseek_v3 {

std::unique_ptr<HfStateDictAdapter> make_hf_adapter();

}  // namespace titan::models::deepseek_v3

#include "titan/models/llama3/model.h"

#include <cmath>

#include "titan/models/llama3/parallelize.h"
#include "titan/nn/transformer_block.h"
#include "titan/ops/rope.h"

namespace titan::models::llama3 {
namespace {

constexpr double kWeightStd = 0.02;
constexpr double kWeightCutoff = 2.0;  // torch's trunc_normal_ default: absolute +-2

nn::InitRule truncated(double std) {
  return nn::InitRule{nn::InitKind::TruncatedNormal, std, kWeightCutoff};
}

DecoderSpec decoder_spec(const ModelArgs& args, int64_t tp) {
  DecoderSpec spec;
  spec.family = "llama3";
  spec.dim = args.dim;
  spec.vocab_size = args.vocab_size;
  spec.n_layers = args.n_layers;
  spec.max_seq_len = args.max_seq_len;
  spec.norm_eps = args.norm_eps;
  spec.weight_tying = args.weight_tying;
  spec.attn_mask_type = args.attn_mask_type;
  const MemoryTagScope tag("buffers");  // the RoPE table: state that is not a parameter
  spec.rope = Tensor::empty({args.max_seq_len, args.head_dim() / 2, 2}, DType::F32);
  ops::rope_table(args.head_dim(), args.rope_theta, args.rope_scaling, 0, spec.rope);
  spec.plan = parallel_plan(args, tp);
  const nn::BlockDims dims{args.dim, args.n_heads, args.n_kv_heads, args.hidden_dim(),
                           args.norm_eps};
  spec.make_block = [dims](int layer, const nn::Placer& placer) {
    const double depth_std = kWeightStd / std::sqrt(2.0 * (layer + 1));
    return std::make_unique<nn::TransformerBlock>(layer, dims, truncated(kWeightStd),
                                                  truncated(depth_std), placer);
  };
  return spec;
}

}  // namespace

std::vector<ParameterShape> parameter_shapes(const ModelArgs& a) {
  const int64_t D = a.dim, hd = a.head_dim(), F = a.hidden_dim();
  std::vector<ParameterShape> shapes = {{"tok_embeddings.weight", {a.vocab_size, D}}};
  for (int64_t i = 0; i < a.n_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    // torchtitan's TransformerBlock defines attention, feed_forward, then the two norms.
    shapes.insert(shapes.end(), {{p + "attention.wq.weight", {a.n_heads * hd, D}},
                                 {p + "attention.wk.weight", {a.n_kv_heads * hd, D}},
                                 {p + "attention.wv.weight", {a.n_kv_heads * hd, D}},
                                 {p + "attention.wo.weight", {D, a.n_heads * hd}},
                                 {p + "feed_forward.w1.weight", {F, D}},
                                 {p + "feed_forward.w2.weight", {D, F}},
                                 {p + "feed_forward.w3.weight", {F, D}},
                                 {p + "attention_norm.weight", {D}},
                                 {p + "ffn_norm.weight", {D}}});
  }
  shapes.push_back({"norm.weight", {D}});
  if (!a.weight_tying) shapes.push_back({"output.weight", {a.vocab_size, D}});
  return shapes;
}

Llama3Model::Llama3Model(const ModelArgs& args, const nn::ParameterLayout& layout,
                         const std::vector<StageModules>& stages)
    : DecoderModel(decoder_spec(args, layout.tp.size), layout, stages), args_(args) {}

}  // namespace titan::models::llama3

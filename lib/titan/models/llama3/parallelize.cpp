#include "titan/models/llama3/parallelize.h"

#include <string>

#include "titan/core/error.h"

namespace titan::models::llama3 {
namespace {

nn::ParameterPlan sharded(int dim, int64_t replicas = 1) {
  nn::ParameterPlan plan;
  plan.tp_shard_dim = dim;
  plan.tp_replicas = replicas;
  return plan;
}

bool splits_heads(const ModelArgs& a, int64_t tp) {
  return a.n_heads % tp == 0 && (a.n_kv_heads % tp == 0 || tp % a.n_kv_heads == 0);
}

}  // namespace

void check_tensor_parallel(const ModelArgs& a, int64_t tp) {
  if (splits_heads(a, tp)) return;
  std::string working;
  for (int64_t d = 1; d <= a.n_heads; ++d) {
    if (splits_heads(a, d)) working += (working.empty() ? "" : ", ") + std::to_string(d);
  }
  TITAN_FAIL_INPUT() << "parallelism.tensor_parallel_degree " << tp << " does not split "
                     << a.n_heads << " heads with " << a.n_kv_heads
                     << " kv heads (n_heads must divide by it, and n_kv_heads divide by it or "
                     << "it by n_kv_heads); degrees that work: " << working;
}

nn::ParameterPlan parameter_plan(const std::string& name, const ModelArgs& args, int64_t tp) {
  constexpr int kColumn = 0, kRow = 1;
  if (name == "tok_embeddings.weight" || name == "output.weight") return sharded(kColumn);
  if (name.ends_with(".attention.wq.weight")) return sharded(kColumn);
  if (name.ends_with(".attention.wk.weight") || name.ends_with(".attention.wv.weight")) {
    // Megatron's GQA rule: tp splits the kv heads, or replicates each over tp / Hkv ranks.
    return sharded(kColumn, tp > args.n_kv_heads ? tp / args.n_kv_heads : 1);
  }
  if (name.ends_with(".attention.wo.weight")) return sharded(kRow);
  if (name.ends_with(".feed_forward.w1.weight") || name.ends_with(".feed_forward.w3.weight")) {
    return sharded(kColumn);
  }
  if (name.ends_with(".feed_forward.w2.weight")) return sharded(kRow);
  TITAN_CHECK(name.ends_with("norm.weight")) << "llama3 parallel plan: no rule for " << name;
  return nn::ParameterPlan{};  // the norms: replicated over tp
}

nn::ParallelPlan parallel_plan(const ModelArgs& args, int64_t tp) {
  check_tensor_parallel(args, tp);
  return [args, tp](const std::string& name) { return parameter_plan(name, args, tp); };
}

}  // namespace titan::models::llama3

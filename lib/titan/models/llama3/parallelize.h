// Llama 3's parallelization plan (torchtitan's parallelize_llama, Megatron's layout): the
// tensor-parallel placement of each parameter. FSDP, its replicas and the mesh coordinates
// are the same for every parameter and come from the layout (nn/placement.h).
//
//   tok_embeddings.weight [V, D]      Shard(0)  vocab-parallel: rows of the table per rank
//   attention.wq [Hq hd, D]           Shard(0)  column-parallel: heads per rank
//   attention.wk, wv [Hkv hd, D]      Shard(0)  column-parallel; when tp exceeds the kv heads,
//                                               tp / Hkv consecutive ranks share one head
//   attention.wo [D, Hq hd]           Shard(1)  row-parallel
//   feed_forward.w1, w3 [F, D]        Shard(0)  column-parallel
//   feed_forward.w2 [D, F]            Shard(1)  row-parallel
//   attention_norm, ffn_norm, norm    Replicate (sequence parallel around them)
//   output.weight [V, D]              Shard(0)  column-parallel: the loss is vocab-parallel
//
// The placements decide each rank's boxes (initialization, checkpoints, FSDP) and the
// modules compute with those pieces (nn/tensor_parallel.h).
#pragma once

#include <string>

#include "titan/models/llama3/args.h"
#include "titan/nn/placement.h"

namespace titan::models::llama3 {

// InputError (exit 2) unless tp splits the heads: n_heads % tp == 0, and the kv heads split
// (n_kv_heads % tp == 0) or are shared (tp % n_kv_heads == 0); the message lists the degrees
// that work.
void check_tensor_parallel(const ModelArgs& args, int64_t tp);
// The plan for one parameter, by its torchtitan name, on `tp` tensor-parallel ranks.
nn::ParameterPlan parameter_plan(const std::string& name, const ModelArgs& args, int64_t tp);
// The same for every parameter of a model of `args`.
nn::ParallelPlan parallel_plan(const ModelArgs& args, int64_t tp);

}  // namespace titan::models::llama3

// Activation checkpointing (torchtitan's activation_checkpoint section): which of a model's
// blocks recompute what before their backward (nn::Recompute, nn/decoder_block.h).
//
//   none           no block
//   full           every block keeps only its input
//   selective N    every N-th block by global layer index, (i + 1) % N == 0, fully (torchtitan
//                  counts the blocks a rank wraps, the same blocks without PP; the global
//                  index keeps a layer's choice on every layout); N = 0 or 1: every block
//   selective op   every block recomputes its cheap ops and keeps its matmul outputs
//   memory_budget  b in [0, 1], torchtitan's meaning: saved activations within
//                  full + b (none - full). Without a compiler's min-cut this picks whole
//                  blocks: the k = ceil((1 - b) L) of a model's L blocks that a full
//                  recompute of each brings under the budget (blocks are alike), spread
//                  evenly over them.
// Gradients are bitwise those of none in every mode: recomputing runs the same ops.
#pragma once

#include <vector>

#include "titan/config/job_config.h"
#include "titan/nn/decoder_block.h"

namespace titan::models {

// One entry per block the model holds; `layer_ids` are their global layer indices.
std::vector<nn::Recompute> activation_checkpoint_plan(
    const config::ActivationCheckpointSection& section, const std::vector<int>& layer_ids);

}  // namespace titan::models

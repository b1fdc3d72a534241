// The deepseek_v3 family (model.name: deepseek_v3): DeepSeek V3 with torchtitan's flavors
// (args.h), its model (model.h) and memory plan (memory.h) behind models/family.h.
//
// What runs today: CPU ranks, one tensor-parallel rank, FSDP / HSDP / DDP, context
// parallel, pipeline stages and activation checkpointing (the frame's, models/decoder_model.h),
// expert parallelism (nn/moe.h), the Hugging Face mapping (hf_adapter.h); tensor
// parallelism and GPU devices are refused with exit 2 naming what is missing.
#pragma once

#include "titan/models/family.h"

namespace titan::models::deepseek_v3 {

const ModelFamily& family();

}  // namespace titan::models::deepseek_v3

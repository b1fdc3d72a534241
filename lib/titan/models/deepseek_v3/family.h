// The deepseek_v3 family (model.name: deepseek_v3): DeepSeek V3 with torchtitan's flavors
// (args.h), its model (model.h) and memory plan (memory.h) behind models/family.h.
//
// What runs today: CPU ranks with FSDP / HSDP / DDP, tensor parallelism (with or without
// sequence parallel), context parallel, pipeline stages and activation checkpointing (the
// frame's, models/decoder_model.h), expert parallelism (nn/moe.h; over the tp ranks too
// with sequence parallel), the Hugging Face mapping (hf_adapter.h); GPU devices are
// refused with exit 2.
#pragma once

#include "titan/models/family.h"

namespace titan::models::deepseek_v3 {

const ModelFamily& family();

}  // namespace titan::models::deepseek_v3

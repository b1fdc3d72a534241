// The llama3 family (model.name: llama3): Llama 3 / 3.1 / 3.2 with torchtitan's flavors
// (args.h), its model (model.h), parallelization plan (parallelize.h) and Hugging Face
// adapter (hf_adapter.h) behind models/family.h.
#pragma once

#include "titan/models/family.h"

namespace titan::models::llama3 {

const ModelFamily& family();

}  // namespace titan::models::llama3

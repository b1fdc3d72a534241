// The deepseek_v3 family's part of memory plans (models/family.h, train/memory_plan.h): which
// FSDP unit holds a parameter and what one microbatch's activations allocate, tensor by
// tensor, in the order block.cpp, nn/latent_attention.cpp and nn/moe.cpp allocate them.
// Every block is counted as a mixture-of-experts block (the larger kind; the dense ones
// keep less), with the picks spread evenly over the experts.
#pragma once

#include <string>

#include "titan/models/deepseek_v3/args.h"
#include "titan/models/family.h"

namespace titan::models::deepseek_v3 {

std::string fsdp_unit_of(const std::string& parameter);
ActivationMemory activation_memory(const ModelArgs& args, const ActivationShape& shape);

}  // namespace titan::models::deepseek_v3

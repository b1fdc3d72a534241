// The llama3 family's part of memory plans (models/family.h, train/memory_plan.h): which FSDP
// unit holds a parameter and what one microbatch's activations allocate, tensor by tensor, in
// the order the modules allocate them (nn/transformer_block.cpp, nn/attention.cpp,
// nn/feed_forward.cpp, model.cpp, nn/vocab_parallel.cpp). A change there changes the peaks
// that test/unit/train/memory_plan_test.cpp holds the plans to.
#pragma once

#include <string>

#include "titan/models/family.h"
#include "titan/models/llama3/args.h"

namespace titan::models::llama3 {

std::string fsdp_unit_of(const ModelArgs& args, const std::string& parameter);
ActivationMemory activation_memory(const ModelArgs& args, const ActivationShape& shape,
                                   bool loss_parallel);

}  // namespace titan::models::llama3

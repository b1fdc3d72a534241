// How a decoder's modules split into pipeline stages (torchtitan's pipeline_llm): each stage
// is a list of module names, "tok_embeddings", "layers.<i>", "norm", "output", and the
// stages in order hold every module once, in the model's order.
//
// The default split counts the embedding as first_less layers and the final norm + output as
// last_less layers (parallelism.pipeline_parallel_first/last_stage_less_layers), and gives
// each stage floor(E / stages) of the E = n_layers + first_less + last_less, the first
// E mod stages stages one more.
#pragma once

#include <string>
#include <vector>

#include "titan/config/job_config.h"

namespace titan::models {

using StageModules = std::vector<std::string>;

// The default split. InputError naming the keys when a stage would be empty or could not
// hold the embedding's or the output's weight.
std::vector<StageModules> split_decoder_stages(int n_layers, int stages, int first_less,
                                               int last_less);

// Checks an explicit split (parallelism.module_fqns_per_model_part) of a decoder with
// n_layers layers into `stages` stages: InputError naming the stage and the module unless
// the lists are `stages` long, know every name, and hold each module once in model order.
// The final norm and the output must share a stage (they are one parameter unit).
void check_decoder_stages(const std::vector<StageModules>& split, int n_layers, int stages);

// A job's split: parallelism.module_fqns_per_model_part when set (checked), else the
// default split with parallelism.pipeline_parallel_first/last_stage_less_layers.
std::vector<StageModules> decoder_stages_for_job(const config::ParallelismSection& parallelism,
                                                 int n_layers, int stages);

// "tok_embeddings, layers.0, layers.1": a stage's modules for messages and logs.
std::string describe_stage(const StageModules& modules);

}  // namespace titan::models

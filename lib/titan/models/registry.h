// The model families this build knows, by model.name (models/family.h).
#pragma once

#include <string>
#include <vector>

#include "titan/models/family.h"

namespace titan::models {

// Every family, in registration order.
const std::vector<const ModelFamily*>& model_families();
// The family model.name names; InputError listing the known ones when none does.
const ModelFamily& model_family(const std::string& name);
// The family whose Hugging Face adapter reads config.json's model_type (a config.json
// without one is a Llama's, as older exports wrote them); InputError naming `origin` and
// listing the types known when none does.
const ModelFamily& model_family_for_hf(const nlohmann::json& config_json,
                                       const std::string& origin);

}  // namespace titan::models

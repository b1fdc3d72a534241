#include "titan/models/registry.h"

#include "titan/core/error.h"
#include "titan/models/deepseek_v3/family.h"
#include "titan/models/llama3/family.h"

namespace titan::models {

const std::vector<const ModelFamily*>& model_families() {
  static const std::vector<const ModelFamily*> families = {
      &llama3::family(),
      &deepseek_v3::family(),
  };
  return families;
}

const ModelFamily& model_family(const std::string& name) {
  std::string known;
  for (const ModelFamily* family : model_families()) {
    if (family->name() == name) return *family;
    known += (known.empty() ? "" : ", ") + family->name();
  }
  TITAN_FAIL_INPUT() << "model.name: '" << name << "' is not a known model; known: " << known;
}

const ModelFamily& model_family_for_hf(const nlohmann::json& config_json,
                                       const std::string& origin) {
  const bool typed = config_json.is_object() && config_json.contains("model_type") &&
                     config_json["model_type"].is_string();
  const std::string model_type = typed ? config_json["model_type"].get<std::string>() : "llama";
  std::string known;
  for (const ModelFamily* family : model_families()) {
    if (family->hf_adapter().hf_model_type() == model_type) return *family;
    known += (known.empty() ? "\"" : ", \"") + family->hf_adapter().hf_model_type() + "\"";
  }
  TITAN_FAIL_INPUT() << origin << ": model_type \"" << model_type
                     << "\" is not a model titan.cpp reads; known: " << known;
}

}  // namespace titan::models

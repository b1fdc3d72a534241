#include "titan/models/activation_checkpoint.h"

#include <cmath>

#include "titan/core/error.h"

namespace titan::models {

std::vector<nn::Recompute> activation_checkpoint_plan(
    const config::ActivationCheckpointSection& section, const std::vector<int>& layer_ids) {
  using config::ActivationCheckpointMode;
  const size_t L = layer_ids.size();
  std::vector<nn::Recompute> plan(L, nn::Recompute::None);
  switch (section.mode) {
    case ActivationCheckpointMode::None:
      break;
    case ActivationCheckpointMode::Full:
      plan.assign(L, nn::Recompute::Full);
      break;
    case ActivationCheckpointMode::Selective: {
      if (section.selective_ac_option == "op") {
        plan.assign(L, nn::Recompute::CheapOps);
        break;
      }
      // The config checks the option (digits or op).
      const int every = std::stoi(section.selective_ac_option);
      for (size_t k = 0; k < L; ++k) {
        if (every <= 1 || (layer_ids[k] + 1) % every == 0) plan[k] = nn::Recompute::Full;
      }
      break;
    }
    case ActivationCheckpointMode::MemoryBudget: {
      // A tiny epsilon keeps budgets like 0.5 of 4 blocks from rounding up to 3.
      const size_t k = size_t(std::ceil((1.0 - section.memory_budget) * double(L) - 1e-9));
      // Block i recomputes when the running share floor((i+1) k / L) steps up.
      for (size_t i = 0; i < L; ++i) {
        if ((i + 1) * k / L > i * k / L) plan[i] = nn::Recompute::Full;
      }
      break;
    }
  }
  return plan;
}

}  // namespace titan::models

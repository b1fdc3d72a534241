#include "titan/ckpt/checkpoint_folder.h"

#include <algorithm>
#include <regex>

namespace titan::ckpt {

std::filesystem::path checkpoint_path(const std::filesystem::path& folder, int64_t step) {
  return folder / ("step-" + std::to_string(step) + ".h5");
}

std::vector<int64_t> checkpoint_steps(const std::filesystem::path& folder) {
  std::vector<int64_t> steps;
  std::error_code error;
  if (!std::filesystem::is_directory(folder, error)) return steps;
  static const std::regex name(R"(step-(\d+)\.h5)");
  for (const auto& entry : std::filesystem::directory_iterator(folder, error)) {
    std::smatch match;
    const std::string file = entry.path().filename().string();
    if (std::regex_match(file, match, name)) steps.push_back(std::stoll(match[1].str()));
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

void prune_checkpoints(const std::filesystem::path& folder, int64_t keep) {
  if (keep <= 0) return;
  const std::vector<int64_t> steps = checkpoint_steps(folder);
  for (size_t i = 0; i + size_t(keep) < steps.size(); ++i) {
    std::error_code error;  // already gone is fine
    std::filesystem::remove(checkpoint_path(folder, steps[i]), error);
  }
}

}  // namespace titan::ckpt

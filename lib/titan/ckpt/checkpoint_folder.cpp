#include "titan/ckpt/checkpoint_folder.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <regex>

#include "titan/core/error.h"

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

namespace {

// fsync of a file or a folder, opened read-only for it.
void sync_path(const std::filesystem::path& target, int flags, const char* what) {
  const int fd = ::open(target.c_str(), flags | O_CLOEXEC);
  TITAN_CHECK(fd >= 0) << what << " " << target.string() << ": cannot open it to sync: "
                       << std::strerror(errno);
  const int synced = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  TITAN_CHECK(synced == 0) << what << " " << target.string() << ": fsync failed: "
                           << std::strerror(error);
}

}  // namespace

void sync_file(const std::filesystem::path& file, const char* what) {
  sync_path(file, O_RDONLY, what);
}

void publish_file(const std::filesystem::path& tmp, const std::filesystem::path& path,
                  const char* what) {
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  TITAN_CHECK(!error) << what << " " << path.string() << ": cannot rename " << tmp.string()
                      << " to it: " << error.message();
  const std::filesystem::path folder = path.has_parent_path() ? path.parent_path() : ".";
  sync_path(folder, O_RDONLY | O_DIRECTORY, what);
}

}  // namespace titan::ckpt

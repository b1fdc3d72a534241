// The checkpoint folder, <job.dump_folder>/<checkpoint.folder>: which steps it holds, the
// file of a step, and pruning to checkpoint.keep_latest_k. Files named step-<N>.h5 count;
// step-<N>.h5.tmp (a save in progress or interrupted) and anything else are passed over.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace titan::ckpt {

std::filesystem::path checkpoint_path(const std::filesystem::path& folder, int64_t step);
// Steps of the step-<N>.h5 files in `folder`, ascending; empty when the folder is missing.
std::vector<int64_t> checkpoint_steps(const std::filesystem::path& folder);
// Deletes all but the newest `keep` checkpoints (keep 0: none deleted). Call only after the
// newest one is complete.
void prune_checkpoints(const std::filesystem::path& folder, int64_t keep);

}  // namespace titan::ckpt

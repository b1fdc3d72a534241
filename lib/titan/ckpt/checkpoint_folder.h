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

// A file written whole under a temporary name becomes visible only with its data on the
// disk: sync_file flushes a written file's data (fsync; any process that wrote part of it
// may call it), publish_file renames `tmp` to `path` and syncs the folder, so that a crash
// or power loss leaves either the old state or the whole new file, never a named file
// without its data. `what` names the file's kind in errors ("checkpoint").
void sync_file(const std::filesystem::path& file, const char* what);
void publish_file(const std::filesystem::path& tmp, const std::filesystem::path& path,
                  const char* what);

}  // namespace titan::ckpt

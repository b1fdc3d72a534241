// Memory snapshots (profiling.enable_memory_snapshot): what the allocator's peak was made
// of, as JSON, one file per rank.
//
//   <dump>/<save_memory_snapshot_folder>/iteration_<step>/rank<r>_memory_snapshot.json
//
// torchtitan writes the CUDA caching allocator's pickled history there every profile_freq
// steps, and into iteration_<step - 1>_exit when a step runs out of memory; titan.cpp
// writes at the same steps and places, from its own allocator (core/allocator.h):
//
//   {"format": "titan.memory_snapshot", "version": 1, "rank": 0, "device": "cpu",
//    "step": 10, "reason": "profile_freq" | "out_of_memory",
//    "peak_steps": [first, last],           // the window the peak was taken over
//    "peak_bytes": ..., "current_bytes": ..., "cached_bytes": ..., "system_allocations": ...,
//    "at_peak": [{"tag": "activations/layers.3", "bytes": ..., "allocations": ...}, ...],
//    "now":     [... the same, for the blocks live when the file was written]}
//
// Lists are biggest first; "at_peak" sums to peak_bytes, "now" to current_bytes. Tags:
// parameters, gradients (the rank's shards), parameters.compute (bf16 copies of unsharded
// weights under mixed precision), parameters.unsharded / gradients.unsharded (FSDP's
// gathered copies), optimizer, activations/<module> (tok_embeddings, layers.<i>,
// output: what a module's forward keeps and its backward's temporaries), communication
// (flat collective buffers), buffers (RoPE table), data, checkpoint, other (untagged).
#pragma once

#include <cstdint>
#include <string>

#include "titan/core/allocator.h"

namespace titan::metrics {

struct MemorySnapshotInfo {
  int rank = 0;
  int64_t step = 0;
  std::string reason;  // "profile_freq" or "out_of_memory"
  int64_t peak_first_step = 0, peak_last_step = 0;
};

std::string memory_snapshot_json(const Allocator& allocator, const MemorySnapshotInfo& info);
// Writes memory_snapshot_json to path, making its folder.
void write_memory_snapshot(const std::string& path, const Allocator& allocator,
                           const MemorySnapshotInfo& info);

}  // namespace titan::metrics

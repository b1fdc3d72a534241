// Dry runs (comm.mode fake_backend, torchtitan's key): one process plays one rank of a world
// that is not there and reports what that rank would hold and send, for layouts far beyond
// this machine (the 405B layout at 512 or 1024 ranks):
//
//   titan-train --config configs/llama3_405b_512gpu.yaml --comm.mode fake_backend
//               --comm.fake_world_size 512 --comm.fake_rank 8
//
// The rank (comm.fake_rank of comm.fake_world_size) builds the mesh (every group a
// distributed::FakeCommunicator: collectives complete at once, move no data and are
// counted), its model's pieces under every placement, FSDP's buffers and the pipeline
// schedule, and runs one training step in counting mode (core/allocator.h): every tensor
// is allocated as address space no memory backs, no op runs, so the allocator counts what
// the rank would hold without this machine holding it, in the dtype the job computes in on
// a GPU (training.mixed_precision_param; the CPU would compute in f32). Checkpoints,
// validation and metrics files are off. The report: the rank's memory at the step's peak by
// tag, beside the memory plan's (train/memory_plan.h) for the same layout; each group's
// collectives (calls and bytes by kind); and the memory this process really held.
#pragma once

#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/core/allocator.h"
#include "titan/distributed/communicator.h"
#include "titan/distributed/mesh.h"
#include "titan/train/memory_plan.h"

namespace titan::train {

struct GroupVolume {
  std::string name;  // "dp_shard_cp", "tp", "pp", ...
  int size = 1;
  distributed::CommStats stats;  // one step's
};

struct DryRunReport {
  distributed::MeshShape shape;
  int64_t rank = 0;
  std::string where;              // describe_rank: "rank 8 (pp 1, dp_shard 0, tp 0)"
  int64_t peak_bytes = 0;         // the allocator's, over the step
  std::vector<TagUsage> at_peak;  // what the peak was made of
  std::vector<GroupVolume> groups;
  int64_t resident_bytes = 0;     // the most this process held (its peak resident set)
  MemoryPlan plan;                // the memory plan of the same rank's layout, on a GPU
};

// Runs the dry run `config` asks for (comm.mode fake_backend). Enters counting mode, which
// lasts for the rest of the process: run it in a process of its own (titan-train does).
DryRunReport dry_run(const config::JobConfig& config);

std::string describe_dry_run(const DryRunReport& report);

}  // namespace titan::train

// Memory plans: what one rank of a job holds at its step's peak, worked out from the config and
// the world size without building anything, so a layout is checked before a cluster is asked
// for (`titan-plan memory`) and a job that cannot fit stops before allocating (the trainer).
//
//   MemoryPlan plan = plan_memory(config, 512, MemoryTarget::gpu(80.0 * kGiB));
//   std::fputs(describe_memory_plan(plan).c_str(), stdout);   // ends "fits" or what would
//
// The plan counts what the allocator counts, under its tags (core/allocator.h, and the
// memory snapshot's list in metrics/memory_snapshot.h), each tensor as the block the allocator
// would hand out (allocator_block_bytes):
//   parameters, gradients    the rank's f32 pieces (placement_box of every parameter of its
//                            pipeline stages: tensor parallel and FSDP splits applied)
//   optimizer                AdamW's two f32 moments of those pieces
//   parameters.compute       bf16 copies of unsharded weights (GPU, no FSDP)
//   parameters.unsharded     FSDP's gathered units, in the compute dtype: the largest two
//                            (one in use, the next prefetched); every unit of the rank's
//                            stages under pipeline parallelism (gathered from their first use
//                            until the step's reduction) or fsdp_reshard_after_forward never
//   gradients.unsharded      FSDP's whole f32 gradients: the largest unit; every unit of the
//                            rank's stages under pipeline parallelism (they accumulate)
//   communication            the reduce-scatter's whole input and shard output, two gather
//                            inputs; a received activation and gradient under PP
//   activations              the family's per-microbatch lists (models/family.h) for the
//                            rank's in-flight microbatches: one at a time without PP; under
//                            PP, walking the rank's schedule (F keeps a microbatch's
//                            activations, B frees them, I keeps the weights' inputs until
//                            W), plus the largest backward's temporaries on top
//   data, buffers            the microbatch's token ids and labels; the RoPE table
//   checkpoint               CPU ranks with asynchronous saves: the copy of the parameters
//                            and AdamW moments a save writes from
// plus `runtime`, which the allocator does not see: the process itself, MPI's or NCCL's
// buffers, the CUDA context and cuBLAS workspaces (estimates: 0.25 GiB on CPU ranks, 2 GiB on
// a GPU). Float8's scales, context parallelism's rotating key/value chunks and tensor
// parallelism's row-block temporaries are left out (small beside the rest).
//
// Ranks differ by pipeline stage only (the other coordinates hold equal pieces, the first
// ones the biggest); the plan is the largest stage's. Tests hold plans to the allocator's
// measured peaks of real runs on several layouts (docs/clusters.md says within how much).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/core/device.h"
#include "titan/distributed/mesh.h"

namespace titan::train {

inline constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// What a rank runs on and the memory each rank may use.
struct MemoryTarget {
  Device device = Device::cuda();
  int64_t available_bytes = 0;  // per rank
  int64_t ranks_per_host = 1;   // CPU ranks sharing a host's memory
  // How it was found: "80.00 GiB per GPU", "23.10 GiB on the host / 4 ranks".
  std::string available;

  static MemoryTarget gpu(double bytes);
  // CPU ranks share a host: `host_bytes` split evenly over `ranks_per_host`.
  static MemoryTarget cpu(double host_bytes, int64_t ranks_per_host);
};

struct MemoryItem {
  std::string tag;  // the allocator's tag, or "runtime"
  int64_t bytes = 0;
  std::string what;  // "2 of 34 units, bf16", "1F1B: 4 microbatches in flight"
};

struct MemoryPlan {
  distributed::MeshShape shape;
  MemoryTarget target;
  int64_t pp_rank = 0;  // the stage rank planned (the largest, unless one was asked for)
  std::vector<MemoryItem> items;
  int64_t total_bytes = 0;      // the items' sum
  int64_t allocator_bytes = 0;  // the same without runtime: what the allocator's peak would be
  bool fits() const { return total_bytes <= target.available_bytes; }
  // When it does not fit: the first change that makes it fit (the override, and the plan's
  // total then), tried in order: full activation checkpointing, a smaller local batch, more
  // ranks for FSDP (CPU ranks: more hosts like this one, each with as many ranks); "" when
  // it fits or none of them does.
  std::string advice;
};

// The plan of `config` on `world_size` ranks (InputError for a config or layout the job
// would reject): the largest pipeline rank's, or `pp_rank`'s. Advice is searched for when
// the plan does not fit.
MemoryPlan plan_memory(const config::JobConfig& config, int64_t world_size,
                       const MemoryTarget& target, int pp_rank = -1);

// The plan as a table by tag with a last line of verdict:
//   "fits: 61.2 GiB of 80 GiB per GPU" or "does not fit: ... ; fits with --key value ...".
std::string describe_memory_plan(const MemoryPlan& plan);

// What this process may use on `device`: the GPU's free memory, or the host's available
// memory (MemAvailable) shared by `ranks_on_host`. TITAN_TEST_AVAILABLE_MEMORY (bytes)
// replaces the measured amount, for tests.
MemoryTarget memory_target_for(Device device, int64_t ranks_on_host);

// The trainer's check before it builds the model: InputError (exit 2) naming the need, what
// is available and the advice when the plan does not fit.
void check_memory_fits(const config::JobConfig& config, int64_t world_size,
                       const MemoryTarget& target);

}  // namespace titan::train

#include "titan/train/dry_run.h"

#include <sys/resource.h>

#include <cstdio>
#include <sstream>

#include "titan/core/error.h"
#include "titan/core/logging.h"
#include "titan/train/trainer.h"

namespace titan::train {
namespace {

using distributed::Collective;
using distributed::MeshDim;

std::string bytes_text(double bytes) {
  char text[32];
  if (bytes >= kGiB) {
    std::snprintf(text, sizeof text, "%.2f GiB", bytes / kGiB);
  } else {
    std::snprintf(text, sizeof text, "%.1f MiB", bytes / (1024.0 * 1024.0));
  }
  return text;
}

// The job as the dry run runs it: one step on synthetic tokens (the real data need not be
// here), nothing written but the step line.
config::JobConfig dry_run_job(config::JobConfig c) {
  c.training.steps = 1;
  c.training.dataset = "synthetic";
  c.training.dataset_path.reset();
  c.checkpoint.enable = false;
  c.validation.enable = false;
  c.profiling.enable_profiling = false;
  c.profiling.enable_memory_snapshot = false;
  c.metrics.enable_tensorboard = false;
  c.metrics.save_for_all_ranks = false;
  if (!c.metrics.peak_tflops) c.metrics.peak_tflops = 1.0;  // no sgemm measurement
  return c;
}

}  // namespace

DryRunReport dry_run(const config::JobConfig& config) {
  TITAN_CHECK_INPUT(config.comm.mode == config::CommMode::FakeBackend)
      << "dry_run: comm.mode is not fake_backend";
  const config::JobConfig job = dry_run_job(config);
  const int world_size = int(job.comm.fake_world_size), rank = int(job.comm.fake_rank);
  DryRunReport report;
  report.shape = distributed::mesh_shape_from_config(job.parallelism, world_size);
  report.rank = rank;
  report.where = distributed::describe_rank(report.shape, rank);
  report.plan = plan_memory(job, world_size, MemoryTarget::gpu(80 * kGiB),
                            int(distributed::mesh_coordinates(report.shape, rank)[size_t(
                                MeshDim::pp)]));

  enter_counting_mode();
  distributed::FakeCommunicator world(rank, world_size, "world");
  distributed::Mesh mesh(report.shape, world, Device::cpu());
  {
    Trainer trainer(job, &mesh, Device::cpu());
    mesh.reset_stats();  // the step's collectives, not the set-up's
    trainer.train_step();
    report.peak_bytes = trainer.metrics().last_peak_bytes();
    report.at_peak = trainer.metrics().last_peak_usage();
    auto add = [&](distributed::Communicator& group) {
      if (group.size() > 1) report.groups.push_back({group.name(), group.size(), group.stats()});
    };
    for (const MeshDim dim : {MeshDim::pp, MeshDim::dp_replicate, MeshDim::dp_shard,
                              MeshDim::cp, MeshDim::tp}) {
      add(mesh.group(dim));
    }
    add(mesh.dp());
    add(mesh.ep());
    add(mesh.efsdp());
    add(mesh.dp_shard_cp());
    add(mesh.world());
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  report.resident_bytes = int64_t(usage.ru_maxrss) * 1024;  // Linux: KiB
  return report;
}

std::string describe_dry_run(const DryRunReport& r) {
  std::ostringstream text;
  text << "dry run (comm.mode fake_backend): " << r.where << " of " << r.shape.world_size()
       << ", " << r.shape.describe() << "; one step, nothing computed, no data moved\n";
  text << "memory at the step's peak, counted (a GPU computing in bf16 would hold this):\n";
  char line[200];
  for (const TagUsage& t : r.at_peak) {
    std::snprintf(line, sizeof line, "  %-30s %11s  allocations: %lld\n", t.tag.c_str(),
                  bytes_text(double(t.bytes)).c_str(), (long long)t.allocations);
    text << line;
  }
  const double planned = double(r.plan.allocator_bytes);
  const double counted = double(std::max<int64_t>(1, r.peak_bytes));
  std::snprintf(line, sizeof line, "  %-30s %11s  (the memory plan: %s, %+.1f%%)\n", "total",
                bytes_text(counted).c_str(), bytes_text(planned).c_str(),
                100.0 * (planned - counted) / counted);
  text << line;
  text << "collectives in the step, by group (bytes as counted: all_gather's output, "
          "reduce_scatter's input, the data of the others):\n";
  for (const GroupVolume& g : r.groups) {
    std::ostringstream kinds;
    for (int c = 0; c < distributed::kCollectiveCount; ++c) {
      const distributed::CollectiveCount& n = g.stats.collectives[size_t(c)];
      if (n.calls == 0) continue;
      kinds << "  " << distributed::collective_name(Collective(c)) << " " << n.calls << " x, "
            << bytes_text(double(n.bytes));
    }
    std::snprintf(line, sizeof line, "  %-12s (%4d ranks)", g.name.c_str(), g.size);
    text << line << (kinds.str().empty() ? "  none" : kinds.str()) << "\n";
  }
  text << "this process held " << bytes_text(double(r.resident_bytes)) << " at most\n";
  return text.str();
}

}  // namespace titan::train

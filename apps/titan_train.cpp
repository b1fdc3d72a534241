// titan-train: parse the command line and the config, then train, on one rank or on every
// rank mpirun/srun started. Only parsing and calls live here (docs/architecture.md); every
// behaviour, exit codes included (distributed/job.h), is in libtitan where tests reach it.
#include <cstdio>
#include <memory>
#include <string>

#include "titan/app/build_info.h"
#include "titan/config/load.h"
#include "titan/core/device_select.h"
#include "titan/core/error.h"
#include "titan/core/logging.h"
#include "titan/distributed/job.h"
#include "titan/distributed/mesh.h"
#include "titan/distributed/runtime.h"
#include "titan/train/dry_run.h"
#include "titan/train/preemption.h"
#include "titan/train/trainer.h"

namespace {

int run(titan::distributed::Runtime& runtime, int argc, char** argv) {
  using namespace titan;
  using namespace titan::config;
  distributed::Job job(runtime);
  CommandLine cli;
  if (!job.setup([&] { cli = parse_command_line(argc, argv); })) return job.exit_code();
  const bool speaker = runtime.rank() == 0;
  switch (cli.action) {
    case Action::ShowHelp:
      if (speaker) std::fputs(command_line_help().c_str(), stdout);
      return 0;
    case Action::ShowVersion: {
      std::string text;  // measures the CPU GEMMs, whose library TITAN_CPU_GEMM may misname
      if (!job.setup([&] { text = app::build_info_text(); })) return job.exit_code();
      if (speaker) std::fputs(text.c_str(), stdout);
      return 0;
    }
    case Action::PrintConfig:
      if (speaker) std::fputs(to_yaml(cli.config).c_str(), stdout);
      return 0;
    case Action::Train:
      break;
  }
  const JobConfig& config = cli.config;
  if (config.comm.mode == CommMode::FakeBackend) {  // a dry run: one process, one rank
    train::DryRunReport report;
    if (!job.setup([&] {
          TITAN_CHECK_INPUT(runtime.world_size() == 1)
              << "comm.mode fake_backend: one process plays one rank of "
                 "comm.fake_world_size; start one process, not " << runtime.world_size();
          report = train::dry_run(config);
        })) {
      return job.exit_code();
    }
    std::fputs(train::describe_dry_run(report).c_str(), stdout);
    return 0;
  }
  distributed::MeshShape shape;
  if (!job.setup([&] {
        shape = distributed::mesh_shape_from_config(config.parallelism, runtime.world_size());
      })) {
    return job.exit_code();
  }
  for (const std::string& warning : config_warnings(config)) log::warn_once(warning, warning);
  if (config.job.print_config) log::info("config:\n%s", to_yaml(config).c_str());
  std::unique_ptr<distributed::Mesh> mesh;
  std::unique_ptr<train::Trainer> trainer;
  if (!job.setup([&] {
        // The device the trainer picks too: the mesh's tensor groups are NCCL on a GPU.
        mesh = std::make_unique<distributed::Mesh>(shape, runtime.world(),
                                                   default_training_device());
        trainer = std::make_unique<train::Trainer>(config, mesh.get());
      })) {
    return job.exit_code();
  }
  if (!job.train([&] { trainer->train(); })) return job.exit_code();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // SIGUSR1, SIGTERM: stop after a step and save. First, so that every thread inherits the
  // mask (train/preemption.h).
  titan::train::hold_stop_signals();
  std::unique_ptr<titan::distributed::Runtime> runtime;
  try {
    runtime = std::make_unique<titan::distributed::Runtime>(&argc, &argv);
  } catch (const titan::InputError& error) {  // e.g. srun without --mpi=pmix
    std::fprintf(stderr, "error: %s\n", error.what());
    return int(titan::ExitCode::BadInput);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return int(titan::ExitCode::Failure);
  }
  return run(*runtime, argc, argv);
}

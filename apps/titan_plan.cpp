// titan-plan: what a job would do, without running it.
//
//   titan-plan schedule --config FILE --world-size N [--svg OUT] [--section.key value ...]
//   titan-plan memory --config FILE --world-size N [--device-memory-gib G] [--device cpu]
//                     [--ranks-per-host K] [--section.key value ...]
//
// schedule: the pipeline schedule the job runs on N ranks (train/pipeline.h), one row per
// rank, with the simulated and the textbook bubble and each stage's modules, on stdout;
// --svg also draws it (distributed/pipeline_schedule.h).
// memory: one rank's memory at the step's peak by tag, and whether it fits
// (train/memory_plan.h): on GPUs of --device-memory-gib (default 80, an H100) computing in
// the config's precision, or with --device cpu on CPU ranks in f32, K of them (default all
// N) sharing this host's available memory (--host-memory-gib overrides it). Exit 0 either
// way: the verdict is the output.
// A config the job would reject is the job's one-line error and exit 2.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "titan/app/subcommand.h"
#include "titan/config/load.h"
#include "titan/core/error.h"
#include "titan/train/memory_plan.h"
#include "titan/train/pipeline.h"

namespace {

constexpr const char* kHelp =
    "usage: titan-plan schedule --config FILE --world-size N [--svg OUT]\n"
    "                           [--section.key value ...]\n"
    "       titan-plan memory --config FILE --world-size N [--device-memory-gib G]\n"
    "                         [--device cpu] [--ranks-per-host K] [--host-memory-gib G]\n"
    "                         [--section.key value ...]\n"
    "  schedule   print the pipeline schedule the job runs on N ranks (and draw it with --svg)\n"
    "  memory     print one rank's memory at the step's peak and whether it fits\n";

// Splits our options (each with a value) from the job's command line (--config, overrides).
std::vector<std::string> split_options(int argc, char** argv,
                                       const std::vector<std::string>& ours,
                                       std::vector<std::pair<std::string, std::string>>& found) {
  using namespace titan;
  std::vector<std::string> job_arguments;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (std::find(ours.begin(), ours.end(), flag) != ours.end()) {
      TITAN_CHECK_INPUT(i + 1 < argc) << argv[1] << ": " << flag << " needs a value";
      found.emplace_back(flag, argv[++i]);
      continue;
    }
    job_arguments.push_back(flag);
  }
  return job_arguments;
}

double parse_gib(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  const double gib = std::strtod(value.c_str(), &end);
  TITAN_CHECK_INPUT(end != value.c_str() && *end == '\0' && gib > 0)
      << "memory: " << flag << " takes a positive number of GiB, got '" << value << "'";
  return gib;
}

int memory(int argc, char** argv) {
  using namespace titan;
  std::vector<std::pair<std::string, std::string>> options;
  const std::vector<std::string> job_arguments = split_options(
      argc, argv,
      {"--world-size", "--device-memory-gib", "--device", "--ranks-per-host", "--host-memory-gib"},
      options);
  int64_t world_size = 0, ranks_per_host = 0;
  double device_gib = 80, host_gib = 0;
  bool cpu = false;
  for (const auto& [flag, value] : options) {
    if (flag == "--world-size") world_size = app::parse_integer(value, "memory: --world-size");
    if (flag == "--device-memory-gib") device_gib = parse_gib(flag, value);
    if (flag == "--host-memory-gib") host_gib = parse_gib(flag, value);
    if (flag == "--ranks-per-host") {
      ranks_per_host = app::parse_integer(value, "memory: --ranks-per-host");
    }
    if (flag == "--device") {
      TITAN_CHECK_INPUT(value == "cpu" || value == "gpu")
          << "memory: --device takes cpu or gpu, got '" << value << "'";
      cpu = value == "cpu";
    }
  }
  TITAN_CHECK_INPUT(world_size >= 1) << "memory: --world-size N (the ranks the job runs on) "
                                        "is required";
  const config::CommandLine cli = config::parse_command_line(job_arguments);
  train::MemoryTarget target = train::MemoryTarget::gpu(device_gib * train::kGiB);
  if (cpu) {
    const int64_t sharing = ranks_per_host > 0 ? ranks_per_host : world_size;
    target = host_gib > 0 ? train::MemoryTarget::cpu(host_gib * train::kGiB, sharing)
                          : train::memory_target_for(Device::cpu(), sharing);
  }
  const train::MemoryPlan plan = train::plan_memory(cli.config, world_size, target);
  std::fputs(train::describe_memory_plan(plan).c_str(), stdout);
  return 0;
}

int schedule(int argc, char** argv) {
  using namespace titan;
  // Our two options; every other argument is the job's command line (--config, overrides).
  std::vector<std::string> job_arguments;
  std::string svg;
  int64_t world_size = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--world-size" || flag == "--svg") {
      TITAN_CHECK_INPUT(i + 1 < argc) << "schedule: " << flag << " needs a value";
      const std::string value = argv[++i];
      if (flag == "--svg") svg = value;
      else world_size = app::parse_integer(value, "schedule: --world-size");
      continue;
    }
    job_arguments.push_back(flag);
  }
  TITAN_CHECK_INPUT(world_size >= 1) << "schedule: --world-size N (the ranks the job runs on) "
                                        "is required";
  const config::CommandLine cli = config::parse_command_line(job_arguments);
  const train::PipelinePlan plan = train::plan_pipeline(cli.config, world_size);
  if (!svg.empty()) {  // before printing: a bad path is the one line, nothing else
    std::ofstream out(svg);
    out << distributed::render_svg(plan.schedule, plan.report);
    TITAN_CHECK_INPUT(out.good()) << "schedule: cannot write " << svg;
  }
  std::fputs(train::describe_plan(plan).c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return titan::app::run_subcommand_tool(argc, argv, kHelp, [](int n, char** args) {
    const std::string command = args[1];
    TITAN_CHECK_INPUT(command == "schedule" || command == "memory")
        << "unknown subcommand '" << command << "'; titan-plan has: schedule, memory";
    return command == "memory" ? memory(n, args) : schedule(n, args);
  });
}

// titan-plan: what a job would do, without running it.
//
//   titan-plan schedule --config FILE --world-size N [--svg OUT] [--section.key value ...]
//
// schedule: the pipeline schedule the job runs on N ranks (train/pipeline.h), one row per
// rank, with the simulated and the textbook bubble and each stage's modules, on stdout;
// --svg also draws it (distributed/pipeline_schedule.h). A config the job would reject is
// the job's one-line error and exit 2.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "titan/app/subcommand.h"
#include "titan/config/load.h"
#include "titan/core/error.h"
#include "titan/train/pipeline.h"

namespace {

constexpr const char* kHelp =
    "usage: titan-plan schedule --config FILE --world-size N [--svg OUT]\n"
    "                           [--section.key value ...]\n"
    "  schedule   print the pipeline schedule the job runs on N ranks (and draw it with --svg)\n";

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
    TITAN_CHECK_INPUT(command == "schedule")
        << "unknown subcommand '" << command << "'; titan-plan has: schedule";
    return schedule(n, args);
  });
}

// titan-train: parse the command line and the config, then train. Only parsing and calls
// live here (DESIGN.md); every behaviour is in libtitan where tests reach it.
#include <cstdio>
#include <exception>

#include "titan/config/load.h"
#include "titan/core/build_info.h"
#include "titan/core/error.h"
#include "titan/core/logging.h"
#include "titan/core/threads.h"
#include "titan/train/trainer.h"

namespace {

int run(int argc, char** argv) {
  using namespace titan::config;
  titan::configure_threads(1);
  const CommandLine cli = parse_command_line(argc, argv);
  switch (cli.action) {
    case Action::ShowHelp:
      std::fputs(command_line_help().c_str(), stdout);
      return 0;
    case Action::ShowVersion:
      std::fputs(titan::build_info_text().c_str(), stdout);
      return 0;
    case Action::PrintConfig:
      std::fputs(to_yaml(cli.config).c_str(), stdout);
      return 0;
    case Action::Train:
      break;
  }
  const JobConfig& config = cli.config;
  for (const std::string& warning : config_warnings(config)) {
    titan::log::warn_once(warning, warning);
  }
  if (config.job.print_config) titan::log::info("config:\n%s", to_yaml(config).c_str());
  titan::train::Trainer trainer(config);
  trainer.train();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const titan::DivergedError& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return int(titan::ExitCode::Diverged);
  } catch (const titan::InputError& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return int(titan::ExitCode::BadInput);
  } catch (const titan::Error& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return int(titan::ExitCode::Failure);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return int(titan::ExitCode::Failure);
  }
}

#include "titan/app/subcommand.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "titan/app/build_info.h"
#include "titan/core/error.h"

namespace titan::app {

const std::string& SubcommandArguments::required(const std::string& name) const {
  const auto it = options.find(name);
  TITAN_CHECK_INPUT(it != options.end()) << command << ": --" << name << " is required (see --help)";
  return it->second;
}

void SubcommandArguments::expect_positional(size_t count, const char* what) const {
  TITAN_CHECK_INPUT(positional.size() == count)
      << command << ": expected " << what << ", got " << positional.size() << " arguments (see --help)";
}

SubcommandArguments parse_subcommand(int argc, char** argv, const std::vector<std::string>& known) {
  SubcommandArguments args;
  args.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string word = argv[i];
    if (word.size() <= 2 || word.rfind("--", 0) != 0) {
      args.positional.push_back(word);
      continue;
    }
    std::string name = word.substr(2), value;
    const size_t equals = name.find('=');
    if (equals != std::string::npos) {
      value = name.substr(equals + 1);
      name.resize(equals);
    } else {
      TITAN_CHECK_INPUT(i + 1 < argc) << args.command << ": --" << name << " needs a value";
      value = argv[++i];
    }
    TITAN_CHECK_INPUT(std::find(known.begin(), known.end(), name) != known.end())
        << args.command << ": unknown option --" << name << " (see --help)";
    args.options[name] = value;
  }
  return args;
}

int run_subcommand_tool(int argc, char** argv, const char* help,
                        const std::function<int(int, char**)>& dispatch) {
  try {
    if (argc < 2) {
      std::fputs(help, stderr);
      return int(ExitCode::BadInput);
    }
    const std::string command = argv[1];
    if (command == "--version") {
      std::fputs(build_info_text().c_str(), stdout);
      return 0;
    }
    bool wants_help = command == "help" || command == "-h";
    for (int i = 1; i < argc; ++i) wants_help = wants_help || std::string(argv[i]) == "--help";
    if (wants_help) {
      std::fputs(help, stdout);
      return 0;
    }
    return dispatch(argc, argv);
  } catch (const InputError& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return int(ExitCode::BadInput);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return int(ExitCode::Failure);
  }
}

int64_t parse_integer(const std::string& text, const std::string& what) {
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TITAN_CHECK_INPUT(used == text.size() && !text.empty()) << what << ": '" << text << "' is not an integer";
  return value;
}

}  // namespace titan::app

// The command lines of the tools with subcommands (titan-data, titan-ckpt):
//   titan-data tokenize --tokenizer T --out DIR FILE...
// `--name value` (or `--name=value`) options before, between or after positional
// arguments; every option takes a value, and only the names a subcommand lists are accepted.
// Mistakes are InputErrors naming the subcommand (exit 2 in the apps).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace titan::app {

struct SubcommandArguments {
  std::string command;
  std::map<std::string, std::string> options;
  std::vector<std::string> positional;

  bool has(const std::string& name) const { return options.count(name) > 0; }
  const std::string& required(const std::string& name) const;
  // Exactly `count` positional arguments, described by `what` in the message.
  void expect_positional(size_t count, const char* what) const;
};

// argv[1] is the subcommand; `known` the option names it takes (without "--").
SubcommandArguments parse_subcommand(int argc, char** argv, const std::vector<std::string>& known);

// The main of a subcommand tool: no arguments prints `help` to stderr (exit 2); `help`,
// `-h` or `--help` anywhere prints it to stdout; `--version` prints the build; otherwise
// `dispatch(argc, argv)` runs the subcommand. An InputError becomes "error: ..." and exit 2,
// any other failure "error: ..." and exit 1.
int run_subcommand_tool(int argc, char** argv, const char* help,
                        const std::function<int(int, char**)>& dispatch);

// A whole decimal integer, or an InputError naming `what`.
int64_t parse_integer(const std::string& text, const std::string& what);

}  // namespace titan::app

// The subcommand tools' command lines (app/subcommand.h): options before, between and after
// positional arguments, unknown options and missing values refused as input errors, and the
// shared main's exit codes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "titan/app/subcommand.h"
#include "titan/core/error.h"

namespace titan::app {
namespace {

// argv for a tool named "tool" from the words after it.
struct Argv {
  explicit Argv(std::vector<std::string> words) : words_(std::move(words)) {
    words_.insert(words_.begin(), "tool");
    for (std::string& w : words_) pointers_.push_back(w.data());
  }
  int argc() { return int(pointers_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> words_;
  std::vector<char*> pointers_;
};

TEST(Subcommand, ParsesOptionsAroundPositionalArguments) {
  Argv a({"tokenize", "in.txt", "--out", "dir", "more.txt", "--seed=3"});
  const SubcommandArguments args = parse_subcommand(a.argc(), a.argv(), {"out", "seed"});
  EXPECT_EQ(args.command, "tokenize");
  EXPECT_EQ(args.positional, (std::vector<std::string>{"in.txt", "more.txt"}));
  EXPECT_EQ(args.required("out"), "dir");
  EXPECT_EQ(args.options.at("seed"), "3");
  EXPECT_FALSE(args.has("vocab-size"));
  EXPECT_THROW(args.required("vocab-size"), InputError);
  EXPECT_THROW(args.expect_positional(1, "one file"), InputError);
  EXPECT_EQ(parse_integer("-12", "--seed"), -12);
  EXPECT_THROW(parse_integer("12x", "--seed"), InputError);
}

TEST(Subcommand, UnknownOptionsAndMissingValuesAreInputErrors) {
  Argv unknown({"tokenize", "--outt", "dir"});
  EXPECT_THROW(parse_subcommand(unknown.argc(), unknown.argv(), {"out"}), InputError);
  Argv missing({"tokenize", "--out"});
  EXPECT_THROW(parse_subcommand(missing.argc(), missing.argv(), {"out"}), InputError);
}

TEST(Subcommand, MainMapsHelpInputErrorsAndFailuresToExitCodes) {
  const auto run = [](std::vector<std::string> words, const std::function<int(int, char**)>& f) {
    Argv a(std::move(words));
    return run_subcommand_tool(a.argc(), a.argv(), "usage: tool COMMAND\n", f);
  };
  const auto never = [](int, char**) -> int {
    ADD_FAILURE() << "dispatched";
    return 0;
  };
  EXPECT_EQ(run({}, never), 2);  // no subcommand: the help on stderr
  EXPECT_EQ(run({"help"}, never), 0);
  EXPECT_EQ(run({"tokenize", "--help"}, never), 0);
  EXPECT_EQ(run({"tokenize"}, [](int, char**) { return 0; }), 0);
  EXPECT_EQ(run({"tokenize"}, [](int, char**) -> int { TITAN_FAIL_INPUT() << "bad"; }), 2);
  EXPECT_EQ(run({"tokenize"}, [](int, char**) -> int { TITAN_FAIL() << "broken"; }), 1);
}

}  // namespace
}  // namespace titan::app

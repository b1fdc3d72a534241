// Runs the real titan-train (TITAN_TRAIN_EXE) as a child process and captures its exit
// status, stdout and stderr, so config tests check what a user sees.
#pragma once

#include <string>
#include <vector>

namespace titan::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 if it did not exit normally
  std::string out;
  std::string err;
  std::vector<std::string> err_lines() const;
};

ProcessResult run_titan_train(const std::vector<std::string>& arguments);

// A fresh file under the test's temporary folder holding `text`; returns its path.
std::string write_temp_file(const std::string& name, const std::string& text);
std::string source_path(const std::string& relative);  // under TITAN_SOURCE_DIR

}  // namespace titan::testing

// Runs a real executable (titan-train: TITAN_TRAIN_EXE, titan-data: TITAN_DATA_EXE,
// titan-ckpt: TITAN_CKPT_EXE) as a child process, optionally feeding bytes to its stdin
// (otherwise /dev/null), and captures its exit status, stdout and stderr, so tests check
// what a user sees.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace titan::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 if it did not exit normally
  std::string out;
  std::string err;
  std::vector<std::string> err_lines() const;
};

ProcessResult run_process(const std::string& executable, const std::vector<std::string>& arguments,
                          const std::optional<std::string>& stdin_bytes = std::nullopt);
ProcessResult run_titan_train(const std::vector<std::string>& arguments);
// titan-train on `ranks` MPI processes: `mpirun --oversubscribe -np <ranks>` with one
// thread per rank and each `environment` entry ("NAME=value") exported to every rank.
// Only in builds with MPI (TITAN_MPIEXEC is defined).
ProcessResult run_titan_train_mpi(int ranks, const std::vector<std::string>& arguments,
                                  const std::vector<std::string>& environment = {});
ProcessResult run_titan_data(const std::vector<std::string>& arguments,
                             const std::optional<std::string>& stdin_bytes = std::nullopt);
ProcessResult run_titan_plan(const std::vector<std::string>& arguments);
// titan-ckpt (TITAN_CKPT_EXE): only in builds with HDF5.
ProcessResult run_titan_ckpt(const std::vector<std::string>& arguments);

// Loss text per step from <dump>/metrics.jsonl (the shortest round-trip form: equal text is
// equal bits); the last line for a step wins (a resumed run appends).
// Another key's value of every step line in metrics.jsonl, as written; steps without it
// are left out.
std::map<int, std::string> logged_metric(const std::string& dump_folder, const std::string& key);
std::map<int, std::string> logged_losses(const std::string& dump_folder);
// A file's whole text ("" when it cannot be read).
std::string read_text_file(const std::string& path);

// A fresh file under the test's temporary folder holding `text`; returns its path.
std::string write_temp_file(const std::string& name, const std::string& text);
std::string source_path(const std::string& relative);  // under TITAN_SOURCE_DIR
// Under the assets folder tools/fetch_assets.sh fills: $TITAN_ASSETS_DIR (relative to the
// source folder unless absolute), default <source>/assets.
std::string assets_path(const std::string& relative);

}  // namespace titan::testing

#include "support/train_process.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace titan::testing {
namespace {

// One folder per test process, removed when the process ends.
struct TempFolder {
  std::string path;
  TempFolder() {
    const char* base = std::getenv("TMPDIR");
    path = std::string(base && *base ? base : "/tmp") + "/titan_config_XXXXXX";
    if (mkdtemp(path.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  }
  ~TempFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

const std::string& temp_folder() {
  static const TempFolder folder;
  return folder.path;
}

std::string read_all(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

std::vector<std::string> ProcessResult::err_lines() const {
  std::vector<std::string> lines;
  std::stringstream stream(err);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  return lines;
}

std::string write_temp_file(const std::string& name, const std::string& text) {
  const std::string path = temp_folder() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

std::string source_path(const std::string& relative) {
  return std::string(TITAN_SOURCE_DIR) + "/" + relative;
}

ProcessResult run_process(const std::string& executable, const std::vector<std::string>& arguments,
                          const std::optional<std::string>& stdin_bytes) {
  static std::atomic<int> counter{0};
  const std::string stem = temp_folder() + "/run" + std::to_string(counter++);
  const std::string out_path = stem + ".out", err_path = stem + ".err", in_path = stem + ".in";
  if (stdin_bytes) std::ofstream(in_path, std::ios::binary) << *stdin_bytes;

  std::vector<std::string> argv_text = {executable};
  argv_text.insert(argv_text.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (std::string& text : argv_text) argv.push_back(text.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const int flags = O_WRONLY | O_CREAT | O_TRUNC;
  posix_spawn_file_actions_addopen(&actions, 0, stdin_bytes ? in_path.c_str() : "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), flags, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), flags, 0644);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) throw std::runtime_error("cannot start " + executable);

  int status = 0;
  waitpid(pid, &status, 0);
  ProcessResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = read_all(out_path);
  result.err = read_all(err_path);
  return result;
}

ProcessResult run_titan_train(const std::vector<std::string>& arguments) {
  return run_process(TITAN_TRAIN_EXE, arguments);
}

ProcessResult run_titan_train_mpi(int ranks, const std::vector<std::string>& arguments,
                                  const std::vector<std::string>& environment) {
#ifdef TITAN_MPIEXEC
  std::vector<std::string> mpirun = {"--oversubscribe", "--allow-run-as-root", "-np",
                                     std::to_string(ranks), "-x", "OMP_NUM_THREADS=1"};
  for (const std::string& variable : environment) {
    mpirun.push_back("-x");
    mpirun.push_back(variable);
  }
  mpirun.push_back(TITAN_TRAIN_EXE);
  mpirun.insert(mpirun.end(), arguments.begin(), arguments.end());
  return run_process(TITAN_MPIEXEC, mpirun);
#else
  (void)ranks, (void)arguments, (void)environment;
  throw std::runtime_error("run_titan_train_mpi: this build has no MPI");
#endif
}

ProcessResult run_titan_data(const std::vector<std::string>& arguments,
                             const std::optional<std::string>& stdin_bytes) {
  return run_process(TITAN_DATA_EXE, arguments, stdin_bytes);
}

ProcessResult run_titan_plan(const std::vector<std::string>& arguments) {
  return run_process(TITAN_PLAN_EXE, arguments);
}

ProcessResult run_titan_ckpt(const std::vector<std::string>& arguments) {
#ifdef TITAN_CKPT_EXE
  return run_process(TITAN_CKPT_EXE, arguments);
#else
  (void)arguments;
  throw std::runtime_error("run_titan_ckpt: this build has no HDF5, so no titan-ckpt");
#endif
}

std::string assets_path(const std::string& relative) {
  const char* assets = std::getenv("TITAN_ASSETS_DIR");
  std::string folder = assets && *assets ? assets : "assets";
  if (folder[0] != '/') folder = source_path(folder);
  return folder + "/" + relative;
}

std::map<int, std::string> logged_losses(const std::string& dump_folder) {
  std::map<int, std::string> by_step;
  std::ifstream in(std::filesystem::path(dump_folder) / "metrics.jsonl");
  static const std::regex line(R"re(\{"step": (\d+), "loss": ([^,]+),)re");
  for (std::string text; std::getline(in, text);) {
    std::smatch m;
    if (std::regex_search(text, m, line)) by_step[std::stoi(m[1])] = m[2];
  }
  return by_step;
}

std::map<int, std::string> logged_metric(const std::string& dump_folder,
                                         const std::string& key) {
  std::map<int, std::string> by_step;
  std::ifstream in(std::filesystem::path(dump_folder) / "metrics.jsonl");
  static const std::regex step(R"re(\{"step": (\d+),)re");
  const std::regex value("\"" + key + "\": ([^,}]+)");
  for (std::string text; std::getline(in, text);) {
    std::smatch s, v;
    if (std::regex_search(text, s, step) && std::regex_search(text, v, value)) {
      by_step[std::stoi(s[1])] = v[1];
    }
  }
  return by_step;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace titan::testing

// A real one-node Slurm (tools/slurm/local_slurm.sh, Debian's packages): the CPU template
// submitted with 2 tasks of the tiny model trains, is signalled as Slurm does before a time
// limit (scancel --signal=USR1 --batch), saves, requeues itself, restarts, resumes and
// finishes with the losses of an uninterrupted run. The ranks start with srun --mpi=pmix.
// Without Slurm (tools/setup.sh --with-slurm installs it; CI does) the test is skipped,
// saying so. The daemons are started and stopped by the test, by their process ids.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "support/train_process.h"
#include "titan/build_config.h"

namespace titan {
namespace {

#if TITAN_HAVE_MPI && TITAN_HAVE_HDF5
namespace fs = std::filesystem;
using testing::ProcessResult;

std::string read_text(const fs::path& file) { return testing::read_text_file(file.string()); }

std::map<int, std::string> losses(const fs::path& dump) {
  return testing::logged_losses(dump.string());
}

ProcessResult shell(const std::string& script) {
  return testing::run_process("/bin/bash", {"-c", script});
}

// The local Slurm for one test: started in `dir`, stopped when it goes out of scope.
class LocalSlurm {
 public:
  explicit LocalSlurm(const fs::path& dir) : dir_(dir) {
    const ProcessResult r = testing::run_process(
        testing::source_path("tools/slurm/local_slurm.sh"), {"start", dir.string()});
    started_ = r.exit_code == 0;
    log_ = r.out + r.err;
  }
  ~LocalSlurm() {
    testing::run_process(testing::source_path("tools/slurm/local_slurm.sh"),
                         {"stop", dir_.string()});
  }
  bool started() const { return started_; }
  const std::string& log() const { return log_; }
  std::string env() const {
    return "export SLURM_CONF='" + (dir_ / "etc/slurm.conf").string() + "'\n";
  }

 private:
  fs::path dir_;
  bool started_ = false;
  std::string log_;
};

TEST(SlurmProcess, TheCpuTemplateIsSignalledRequeuedAndResumesExactly) {
  if (!fs::exists("/usr/sbin/slurmctld") || !fs::exists("/usr/sbin/slurmd") ||
      !fs::exists("/usr/sbin/munged")) {
    GTEST_SKIP() << "Slurm is not installed here: tools/setup.sh --with-slurm installs it "
                    "(CI does, through .ci/run)";
  }
  const fs::path work = fs::temp_directory_path() / "titan_slurm_process";
  fs::remove_all(work);
  fs::create_directories(work);
  const LocalSlurm slurm(work / "slurm");
  ASSERT_TRUE(slurm.started()) << slurm.log();

  const std::string args = "--model.flavor tiny --training.dataset_path " +
                           testing::assets_path("data/sotu") +
                           " --training.seq_len 64 --training.steps 60 --metrics.log_freq 1 "
                           "--metrics.peak_tflops 1 --training.local_batch_size 2 "
                           "--checkpoint.no_last_save_model_only";
  const fs::path dump = work / "dump", log = work / "step.log";
  const std::string submit =
      slurm.env() + "export TITAN_ROOT='" + testing::source_path("") + "' TITAN_EXE='" +
      TITAN_TRAIN_EXE + "' DUMP='" + dump.string() + "' TITAN_STEP_LOG='" + log.string() +
      "' TITAN_ARGS='" + args + "'\n"
      "sbatch --parsable --partition=debug --account=test --chdir='" + work.string() +
      "' --output='" + (work / "batch.out").string() + "' --ntasks-per-node=2 '" +
      testing::source_path("jobscripts/cpu_cluster.sbatch") + "'\n";
  const ProcessResult submitted = shell(submit);
  ASSERT_EQ(submitted.exit_code, 0) << submitted.out << submitted.err;
  const std::string job = std::regex_replace(submitted.out, std::regex(R"(\s+)"), "");

  // Signal once step 3 is logged, as --signal=B:USR1 would.
  const ProcessResult signalled = shell(
      slurm.env() + "for i in $(seq 600); do grep -q 'step: 3 ' '" + log.string() +
      "' 2>/dev/null && break; sleep 0.1; done\nscancel --signal=USR1 --batch " + job + "\n");
  ASSERT_EQ(signalled.exit_code, 0) << signalled.out << signalled.err;
  // The job stops, requeues itself, restarts after about 11 s, resumes and completes.
  std::string state;
  for (int i = 0; i < 120 && state != "COMPLETED" && state != "FAILED"; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const ProcessResult shown = shell(slurm.env() + "scontrol show job " + job);
    std::smatch m;
    if (std::regex_search(shown.out, m, std::regex(R"(JobState=([A-Z_]+))"))) state = m[1];
  }
  const std::string step_log = read_text(log), batch = read_text(work / "batch.out");
  ASSERT_EQ(state, "COMPLETED") << batch << step_log;
  EXPECT_NE(batch.find("requeueing job " + job), std::string::npos) << batch;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(step_log, m, std::regex(R"(stopped on SIGUSR1 at step (\d+))")))
      << step_log;
  const int stopped = std::stoi(m[1]);
  EXPECT_NE(step_log.find("loaded " + (dump / "checkpoint").string() + "/step-" +
                          std::to_string(stopped) + ".h5"),
            std::string::npos)
      << step_log;
  EXPECT_NE(step_log.find("training done: 60 steps"), std::string::npos) << step_log;

  // The uninterrupted run under mpirun: the same losses, bit for bit.
  std::vector<std::string> reference = {
      "--config", testing::source_path("configs/llama3_debug.yaml"), "--job.dump_folder",
      (work / "reference").string()};
  std::istringstream words(args);
  for (std::string word; words >> word;) reference.push_back(word);
  const ProcessResult straight = testing::run_titan_train_mpi(2, reference);
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  const std::map<int, std::string> got = losses(dump), want = losses(work / "reference");
  ASSERT_EQ(want.size(), 60u);
  for (int step = 1; step <= 60; ++step) {
    ASSERT_TRUE(got.count(step)) << "step " << step;
    EXPECT_EQ(got.at(step), want.at(step)) << "step " << step;
  }
}
#endif

}  // namespace
}  // namespace titan

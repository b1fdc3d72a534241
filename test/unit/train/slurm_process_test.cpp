// A real one-node Slurm (tools/slurm/local_slurm.sh, Debian's packages): the CPU template
// submitted with 2 tasks of the tiny model trains, is signalled as Slurm does before a time
// limit (scancel --signal=USR1 --batch), saves, requeues itself, restarts, resumes and
// finishes with the losses of an uninterrupted run; and a rank killed with SIGKILL ends the
// job at once. The ranks start with srun --mpi=pmix.
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

// An empty folder of the test's own under the temporary folder.
fs::path fresh_folder(const std::string& name) {
  const fs::path folder = fs::temp_directory_path() / name;
  fs::remove_all(folder);
  fs::create_directories(folder);
  return folder;
}

bool slurm_installed() {
  return fs::exists("/usr/sbin/slurmctld") && fs::exists("/usr/sbin/slurmd") &&
         fs::exists("/usr/sbin/munged");
}
constexpr const char* kWithoutSlurm =
    "Slurm is not installed here: tools/setup.sh --with-slurm installs it (CI does, through "
    ".ci/run)";

// The CPU template submitted with 2 tasks of the tiny model training `steps` steps into
// work/dump, the ranks' output in work/step.log; returns the job id.
std::string submit_cpu_template(const LocalSlurm& slurm, const fs::path& work,
                                const std::string& args) {
  const std::string submit =
      slurm.env() + "export TITAN_ROOT='" + testing::source_path("") + "' TITAN_EXE='" +
      TITAN_TRAIN_EXE + "' DUMP='" + (work / "dump").string() + "' TITAN_STEP_LOG='" +
      (work / "step.log").string() + "' TITAN_ARGS='" + args + "'\n"
      "sbatch --parsable --partition=debug --account=test --chdir='" + work.string() +
      "' --output='" + (work / "batch.out").string() + "' --ntasks-per-node=2 '" +
      testing::source_path("jobscripts/cpu_cluster.sbatch") + "'\n";
  const ProcessResult submitted = shell(submit);
  EXPECT_EQ(submitted.exit_code, 0) << submitted.out << submitted.err;
  return std::regex_replace(submitted.out, std::regex(R"(\s+)"), "");
}

// Waits (the shell's loop) until the step log shows `step`.
ProcessResult wait_for_step(const fs::path& log, int step) {
  return shell("for i in $(seq 600); do grep -q 'step: " + std::to_string(step) + " ' '" +
               log.string() + "' 2>/dev/null && break; sleep 0.1; done\n");
}

// The job's state (COMPLETED, FAILED, ...), polled each second until it is one of `final`
// or `seconds` have passed; "JobState ExitCode" as scontrol shows them.
std::string wait_for_job(const LocalSlurm& slurm, const std::string& job, int seconds) {
  std::string state;
  for (int i = 0; i < seconds; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const ProcessResult shown = shell(slurm.env() + "scontrol show job " + job);
    std::smatch job_state, exit_code;
    if (std::regex_search(shown.out, job_state, std::regex(R"(JobState=([A-Z_]+))")) &&
        std::regex_search(shown.out, exit_code, std::regex(R"( ExitCode=([0-9:]+))"))) {
      state = std::string(job_state[1]) + " " + std::string(exit_code[1]);
    }
    if (state.rfind("COMPLETED", 0) == 0 || state.rfind("FAILED", 0) == 0) break;
  }
  return state;
}

constexpr const char* kTinyArgs =
    "--model.flavor tiny --training.seq_len 64 --metrics.log_freq 1 --metrics.peak_tflops 1 "
    "--training.local_batch_size 2 --checkpoint.no_last_save_model_only";

TEST(SlurmProcess, TheCpuTemplateIsSignalledRequeuedAndResumesExactly) {
  if (!slurm_installed()) GTEST_SKIP() << kWithoutSlurm;
  const fs::path work = fresh_folder("titan_slurm_process");
  const LocalSlurm slurm(work / "slurm");
  ASSERT_TRUE(slurm.started()) << slurm.log();

  const std::string args = std::string(kTinyArgs) + " --training.dataset_path " +
                           testing::assets_path("data/sotu") + " --training.steps 60";
  const fs::path dump = work / "dump", log = work / "step.log";
  const std::string job = submit_cpu_template(slurm, work, args);
  ASSERT_FALSE(job.empty());

  // Signal once step 3 is logged, as --signal=B:USR1 would.
  wait_for_step(log, 3);
  const ProcessResult signalled = shell(slurm.env() + "scancel --signal=USR1 --batch " + job);
  ASSERT_EQ(signalled.exit_code, 0) << signalled.out << signalled.err;
  // The job stops, requeues itself, restarts after about 11 s, resumes and completes.
  const std::string state = wait_for_job(slurm, job, 120);
  const std::string step_log = read_text(log), batch = read_text(work / "batch.out");
  ASSERT_EQ(state, "COMPLETED 0:0") << batch << step_log;
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

// A rank killed with SIGKILL (as the kernel's out-of-memory killer or a lost node does):
// the template's srun (--kill-on-bad-exit=1) ends the other rank and the step at once, the
// job fails with the rank's 137, and it is not requeued (a crash is no preemption). Without
// it the others would wait for comm.train_timeout_seconds (100 s) in their next collective.
TEST(SlurmProcess, ARankKilledWithSigkillEndsTheJobAtOnce) {
  if (!slurm_installed()) GTEST_SKIP() << kWithoutSlurm;
  const fs::path work = fresh_folder("titan_slurm_kill");
  const LocalSlurm slurm(work / "slurm");
  ASSERT_TRUE(slurm.started()) << slurm.log();
  const std::string args =
      std::string(kTinyArgs) + " --training.dataset synthetic --training.steps 100000";
  const std::string job = submit_cpu_template(slurm, work, args);
  ASSERT_FALSE(job.empty());
  const fs::path log = work / "step.log";
  wait_for_step(log, 3);
  const auto killed_at = std::chrono::steady_clock::now();
  // A rank: a child of slurmstepd (srun's own command line has the same arguments).
  const ProcessResult killed = shell("kill -9 $(pgrep -P \"$(pgrep -d, -x slurmstepd)\" -f -- "
                                     "'--job.dump_folder " + (work / "dump").string() +
                                     "' | tail -1)");
  ASSERT_EQ(killed.exit_code, 0) << killed.err;
  const std::string state = wait_for_job(slurm, job, 60);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  const std::string batch = read_text(work / "batch.out");
  EXPECT_EQ(state, "FAILED 137:0") << batch << read_text(log);
  EXPECT_LT(seconds, 30.0) << batch;
  EXPECT_EQ(batch.find("requeueing"), std::string::npos) << batch;
}
#endif

}  // namespace
}  // namespace titan

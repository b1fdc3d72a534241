// The launch templates in jobscripts/ (docs/clusters.md): each template's nodes x ranks per
// node match its config's degrees and its memory plan fits (the checks it runs before
// launching; a wrong count or a plan that does not fit is exit 2), shellcheck finds
// nothing, and the CPU template, run with stand-ins for srun (an mpirun of the same ranks)
// and scontrol (a recorder), forwards a USR1 to the ranks, which save and stop, and then
// requeues itself. On a real Slurm: slurm_process_test.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "support/train_process.h"
#include "titan/build_config.h"

namespace titan {
namespace {

namespace fs = std::filesystem;
using testing::ProcessResult;

std::string describe(const ProcessResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

std::string read_text(const fs::path& file) { return testing::read_text_file(file.string()); }

int sbatch_number(const std::string& text, const std::string& option) {
  std::smatch m;
  const std::regex line("#SBATCH --" + option + "=(\\d+)");
  EXPECT_TRUE(std::regex_search(text, m, line)) << option;
  return std::stoi(m[1]);
}

// The template as its batch script, stopping after the checks (TITAN_CHECK_ONLY).
ProcessResult check_template(const std::string& name, int nodes, int per_node) {
  const std::string script = "SLURM_JOB_ID=7 SLURM_NNODES=" + std::to_string(nodes) +
                             " SLURM_NTASKS_PER_NODE=" + std::to_string(per_node) +
                             " TITAN_ROOT='" + testing::source_path("") + "' TITAN_EXE='" +
                             TITAN_TRAIN_EXE + "' TITAN_CHECK_ONLY=1 bash '" +
                             testing::source_path("jobscripts/" + name) + "'";
  return testing::run_process("/bin/sh", {"-c", script});
}

TEST(Jobscripts, EachTemplatesNodesMatchItsConfigsDegrees) {
  if (!TITAN_HAVE_HDF5) GTEST_SKIP() << "every template enables checkpoints: no HDF5 here";
  for (const char* name :
       {"llama3_8b.sbatch", "llama3_70b.sbatch", "llama3_405b.sbatch", "cpu_cluster.sbatch"}) {
    SCOPED_TRACE(name);
    const std::string text = read_text(testing::source_path(std::string("jobscripts/") + name));
    const int nodes = sbatch_number(text, "nodes");
    const int per_node = sbatch_number(text, "ntasks-per-node");
    const ProcessResult r = check_template(name, nodes, per_node);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_NE(r.out.find(std::to_string(nodes * per_node) + " ranks = the degrees"),
              std::string::npos)
        << describe(r);
    EXPECT_NE(r.out.find("memory per rank: fits: "), std::string::npos) << describe(r);
    EXPECT_NE(r.out.find("would run: srun --mpi=pmix"), std::string::npos) << describe(r);
    for (const char* needed : {"--requeue", "--signal=B:USR1@", "--open-mode=append",
                               "CHANGE_ME", "--checkpoint.enable"}) {
      EXPECT_NE(text.find(needed), std::string::npos) << needed;
    }
  }
  // 405B: 512 ranks are tp 8 x pp 8 x dp_shard 8; 70B's tp 8 does not fit 4 ranks, and the
  // 8B model's weights, gradients and AdamW state (120 GiB) do not fit one 80 GiB GPU.
  EXPECT_NE(check_template("llama3_405b.sbatch", 64, 8).out.find("(dp_shard 8)"),
            std::string::npos);
  const ProcessResult alone = check_template("llama3_8b.sbatch", 1, 1);
  EXPECT_EQ(alone.exit_code, 2) << describe(alone);
  EXPECT_NE(alone.err.find("does not fit: "), std::string::npos) << describe(alone);
  const ProcessResult wrong = check_template("llama3_70b.sbatch", 1, 4);
  EXPECT_EQ(wrong.exit_code, 2) << describe(wrong);
  EXPECT_NE(wrong.err.find("change the nodes or the degrees"), std::string::npos)
      << describe(wrong);
}

TEST(Jobscripts, ShellcheckFindsNothing) {
  if (!fs::exists("/usr/bin/shellcheck")) {
    GTEST_SKIP() << "shellcheck is not installed (apt-get install shellcheck)";
  }
  const ProcessResult r = testing::run_process(
      "/bin/sh", {"-c", "cd '" + testing::source_path("") + "' && shellcheck -x "
                        "jobscripts/*.sbatch jobscripts/titan_job.sh jobscripts/mpirun/launch.sh "
                        "tools/slurm/local_slurm.sh"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
}

#if TITAN_HAVE_MPI && TITAN_HAVE_HDF5
// The batch script's trap with stand-ins for Slurm's commands: srun is an mpirun of the
// job's ranks, scontrol records its arguments. USR1 to the script (what --signal=B:USR1
// does) reaches the ranks through the trap; they save and stop; the script requeues.
TEST(Jobscripts, TheCpuTemplateForwardsUsr1ToTheRanksAndRequeues) {
  const fs::path dir = fs::temp_directory_path() / "titan_jobscripts_usr1";
  fs::remove_all(dir);
  fs::create_directories(dir / "bin");
  std::ofstream(dir / "bin" / "srun")
      << "#!/bin/sh\n"
      << "for a; do shift; case $a in --mpi=*|--kill-on-bad-exit=*) ;;\n"
      << "  *) set -- \"$@\" \"$a\";; esac; done\n"
      << "exec " << TITAN_MPIEXEC << " --oversubscribe --allow-run-as-root "
      << "-np $((SLURM_NNODES * SLURM_NTASKS_PER_NODE)) -x OMP_NUM_THREADS \"$@\"\n";
  std::ofstream(dir / "bin" / "scontrol")
      << "#!/bin/sh\necho \"$@\" >> " << (dir / "scontrol.log").string() << "\n";
  fs::permissions(dir / "bin" / "srun", fs::perms::owner_all, fs::perm_options::add);
  fs::permissions(dir / "bin" / "scontrol", fs::perms::owner_all, fs::perm_options::add);
  const fs::path log = dir / "step.log";
  const std::string args = "--model.flavor tiny --training.dataset_path " +
                           testing::assets_path("data/sotu") +
                           " --training.seq_len 64 --training.steps 2000 --metrics.log_freq 1 "
                           "--metrics.peak_tflops 1 --training.local_batch_size 2";
  const std::string script =
      "export PATH='" + (dir / "bin").string() + "':$PATH SLURM_JOB_ID=7 SLURM_NNODES=1 "
      "SLURM_NTASKS_PER_NODE=2 TITAN_ROOT='" + testing::source_path("") + "' TITAN_EXE='" +
      TITAN_TRAIN_EXE + "' DUMP='" + (dir / "dump").string() + "' TITAN_STEP_LOG='" +
      log.string() + "' TITAN_ARGS='" + args + "'\n"
      "bash '" + testing::source_path("jobscripts/cpu_cluster.sbatch") + "' &\n"
      "pid=$!\n"
      "for i in $(seq 600); do grep -q 'step: 3 ' '" + log.string() + "' 2>/dev/null && break; "
      "sleep 0.1; done\n"
      "kill -USR1 $pid\n"
      "wait $pid\n";
  const ProcessResult r = testing::run_process("/bin/bash", {"-c", script});
  EXPECT_EQ(r.exit_code, 0) << describe(r) << "\nstep log:\n" << read_text(log);
  EXPECT_NE(r.out.find("requeueing job 7"), std::string::npos) << describe(r);
  EXPECT_EQ(read_text(dir / "scontrol.log"), "requeue 7\n");
  std::smatch m;
  const std::string step_log = read_text(log);
  ASSERT_TRUE(std::regex_search(step_log, m, std::regex(R"(stopped on SIGUSR1 at step (\d+))")))
      << step_log;
  EXPECT_TRUE(fs::exists(dir / "dump" / "checkpoint" / ("step-" + m[1].str() + ".h5")));
}
#endif

}  // namespace
}  // namespace titan

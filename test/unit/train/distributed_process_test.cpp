// titan-train under mpirun, as a user runs it: FSDP trains; a bad mesh is one line and
// exit 2; a rank that throws or stops answering ends the job with exit 1, never a hang
// (docs/design.md, "Errors, exit codes, logs").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "support/train_process.h"
#include "titan/build_config.h"

namespace titan {
namespace {

#if TITAN_HAVE_MPI
using testing::ProcessResult;

std::vector<std::string> tiny_run(const std::string& name, std::vector<std::string> extra = {}) {
  const std::filesystem::path dump = std::filesystem::temp_directory_path() / ("titan_mpi_" + name);
  std::filesystem::remove_all(dump);
  std::vector<std::string> args = {"--model.flavor", "tiny",
                                   "--training.dataset", "synthetic",
                                   "--training.seq_len", "32",
                                   "--training.local_batch_size", "2",
                                   "--training.steps", "3",
                                   "--metrics.log_freq", "1",
                                   "--metrics.peak_tflops", "1",
                                   "--job.dump_folder", dump.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string describe(const ProcessResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

int64_t count_of(const std::string& text, const std::string& needle) {
  int64_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
  return count;
}

TEST(DistributedProcess, TwoRanksTrainWithFsdpAndRankZeroSpeaks) {
  const ProcessResult r = testing::run_titan_train_mpi(2, tiny_run("fsdp"));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string all = r.out + r.err;
  EXPECT_NE(all.find("dp_shard 2"), std::string::npos) << describe(r);
  EXPECT_NE(all.find("(FSDP)"), std::string::npos) << describe(r);
  EXPECT_EQ(count_of(all, "step: 3 "), 1) << "one step line per step, from rank 0\n" << describe(r);
  EXPECT_NE(all.find("comm: "), std::string::npos) << describe(r);
}

// Stragglers: a rank made 0.5 s slower at step 2 is named by that step's line (its busy
// time; the other rank's wait shows as communication), with its mesh coordinates.
TEST(DistributedProcess, AStragglerIsNamedInTheStepLine) {
  const ProcessResult r =
      testing::run_titan_train_mpi(2, tiny_run("straggler"), {"TITAN_TEST_FAULT=slow:1:2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::string all = r.out + r.err;
  const size_t step_2 = all.find("step: 2 ");
  ASSERT_NE(step_2, std::string::npos) << describe(r);
  const std::string line = all.substr(step_2, all.find('\n', step_2) - step_2);
  EXPECT_NE(line.find("slowest rank 1 (dp_shard 1)"), std::string::npos) << line;
  EXPECT_NE(line.find("busy: "), std::string::npos) << line;
}

// Validation steps (step 1 and every validation.freq steps, torchtitan's rule) carry
// val_loss and val_ppl in the step line and val_loss, val_perplexity = exp(val_loss) in
// metrics.jsonl.
TEST(DistributedProcess, ValidationLossIsInTheStepLineAndMetrics) {
  const std::filesystem::path dump = std::filesystem::temp_directory_path() / "titan_mpi_validation";
  // Synthetic training tokens; validation reads the SOTU shards' validation split.
  const std::vector<std::string> args = tiny_run(
      "validation", {"--validation.enable", "--validation.dataset_path", testing::assets_path("data/sotu"),
                     "--validation.freq", "2", "--validation.seq_len", "32",
                     "--validation.local_batch_size", "2", "--validation.steps", "2",
                     "--training.steps", "4"});
  const ProcessResult r = testing::run_titan_train_mpi(2, args);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(count_of(r.out + r.err, "val_loss: "), 3) << describe(r);  // steps 1, 2 and 4
  std::ifstream metrics(dump / "metrics.jsonl");
  int with_validation = 0;
  for (std::string line; std::getline(metrics, line);) {
    const size_t at = line.find("\"val_loss\": ");
    if (at == std::string::npos) continue;
    ++with_validation;
    const double loss = std::stod(line.substr(at + 12));
    const size_t p = line.find("\"val_perplexity\": ");
    ASSERT_NE(p, std::string::npos) << line;
    EXPECT_NEAR(std::stod(line.substr(p + 18)), std::exp(loss), 1e-9 * std::exp(loss)) << line;
  }
  EXPECT_EQ(with_validation, 3);
}

TEST(DistributedProcess, BadMeshesAreOneLineAndExitTwo) {
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> expected;  // in the message
  };
  const Case cases[] = {
      {{"--parallelism.data_parallel_shard_degree", "3"}, {"3", "2"}},
      {{"--parallelism.data_parallel_replicate_degree", "4"}, {"4", "2"}},
      {{"--parallelism.data_parallel_replicate_degree", "2", "--parallelism.data_parallel_shard_degree",
        "2"},
       {"2", "4"}},
      {{"--parallelism.tensor_parallel_degree", "4"}, {"tensor_parallel_degree 4", "2 ranks"}},
      {{"--parallelism.tensor_parallel_degree", "2", "--training.seq_len", "63"},
       {"training.seq_len: 63", "62 or 64"}},
      // A local batch of 2 does not split into microbatches of 3.
      {{"--parallelism.pipeline_parallel_degree", "2",
        "--parallelism.pipeline_parallel_microbatch_size", "3"},
       {"pipeline_parallel_microbatch_size", "2"}},
      // DualPipeV needs 2 x pp = 4 microbatches; a local batch of 2 makes 2.
      {{"--parallelism.pipeline_parallel_degree", "2", "--parallelism.pipeline_parallel_schedule",
        "DualPipeV"},
       {"DualPipeV", "4"}},
      // Head-tail load balancing deals 2 x cp = 4 chunks of each sequence.
      {{"--parallelism.context_parallel_degree", "2", "--training.seq_len", "62"},
       {"training.seq_len: 62", "60 or 64"}},
      // The global batch must divide by local batch x dp = 2 x 2.
      {{"--training.global_batch_size", "6"}, {"global_batch_size", "4"}},
  };
  for (const Case& c : cases) {
    const ProcessResult r = testing::run_titan_train_mpi(2, tiny_run("bad_mesh", c.args));
    const std::string where = c.args[0] + " " + c.args[1];
    EXPECT_EQ(r.exit_code, 2) << where << "\n" << describe(r);
    const std::vector<std::string> lines = r.err_lines();
    const auto errors = std::count_if(lines.begin(), lines.end(), [](const std::string& line) {
      return line.find("error") != std::string::npos;
    });
    EXPECT_EQ(errors, 1) << where << ": one line, from rank 0\n" << describe(r);
    for (const std::string& word : c.expected) {
      EXPECT_NE(r.err.find(word), std::string::npos) << where << ": wants '" << word << "'\n" << describe(r);
    }
  }
}

TEST(DistributedProcess, ARankThatThrowsEndsTheJobWithExitOne) {
  const ProcessResult r = testing::run_titan_train_mpi(2, tiny_run("throw"), {"TITAN_TEST_FAULT=throw:1:2"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("[rank 1] error: "), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("test fault injected at step 2"), std::string::npos) << describe(r);
}

// Rank 1 stops answering at step 2; rank 0 waits in the step's first collective (the
// all-reduce of the valid-token count over dp) and gives up after the timeout.
TEST(DistributedProcess, ARankThatStopsAnsweringMakesTheOthersFailAfterTheTimeout) {
  const ProcessResult r = testing::run_titan_train_mpi(
      2, tiny_run("hang", {"--comm.train_timeout_seconds", "2"}), {"TITAN_TEST_FAULT=hang:1:2"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("[rank 0] error: all_reduce"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("on dp"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("2 s"), std::string::npos) << describe(r);
}
#endif

}  // namespace
}  // namespace titan

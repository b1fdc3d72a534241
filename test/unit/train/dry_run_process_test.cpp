// Dry runs (comm.mode fake_backend, train/dry_run.h) as a user starts them: one titan-train
// process plays one rank of a world that is not there. The debug model on 8 ranks counts
// FSDP's collectives unit by unit; the 405B template's layout at 512 and 1024 ranks counts
// 50 GiB per rank (within 3% of the memory plan) while the process holds a few hundred MiB;
// requests that cannot be a dry run are one line and exit 2. Each is its own process:
// counting mode lasts for the rest of one.
#include <gtest/gtest.h>

#include <regex>

#include "support/train_process.h"
#include "titan/build_config.h"

namespace titan {
namespace {

using testing::ProcessResult;

std::string describe(const ProcessResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

ProcessResult dry_run(const std::string& config, int world, int rank,
                      std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--config", testing::source_path(config), "--comm.mode",
                                   "fake_backend", "--comm.fake_world_size",
                                   std::to_string(world), "--comm.fake_rank",
                                   std::to_string(rank)};
  args.insert(args.end(), extra.begin(), extra.end());
  return testing::run_titan_train(args);
}

// The report's "total ... (the memory plan: ..., +x%)" percentage and "held N MiB".
double plan_difference_percent(const std::string& out) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(out, m, std::regex(R"(the memory plan: [^,]+, ([-+][0-9.]+)%)")))
      << out;
  return m.empty() ? 1e9 : std::stod(m[1]);
}

TEST(DryRunProcess, FsdpOnEightRanksCountsEachUnitsCollectives) {
  const ProcessResult r = dry_run("configs/llama3_debug.yaml", 8, 3);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("dry run (comm.mode fake_backend): rank 3 (dp_shard 3) of 8"),
            std::string::npos) << r.out;
  // 8 units: one reduce-scatter each; gathered in forward (8) and again in backward by
  // each unit freed after forward whose backward reads weights (7: not the embedding's;
  // the head's stays gathered).
  EXPECT_NE(r.out.find("dp_shard_cp  (   8 ranks)  reduce_scatter 8 x"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("all_gather 15 x"), std::string::npos) << r.out;
  EXPECT_LE(std::abs(plan_difference_percent(r.out)), 5.0) << r.out;
}

TEST(DryRunProcess, The405bLayoutAt512And1024RanksIsCountedNotHeld) {
  if (!TITAN_HAVE_HDF5) GTEST_SKIP() << "the 405B config enables checkpoints: no HDF5 here";
  struct Case {
    int world, rank;
    const char* where;
  };
  for (const Case& c : {Case{512, 8, "rank 8 (pp 0, dp_shard 1, tp 0) of 512"},
                        Case{512, 511, "rank 511 (pp 7, dp_shard 7, tp 7) of 512"},
                        Case{1024, 1023, "rank 1023 (pp 7, dp_shard 15, tp 7) of 1024"}}) {
    SCOPED_TRACE(c.where);
    const ProcessResult r = dry_run("configs/llama3_405b_512gpu.yaml", c.world, c.rank,
                                    {"--parallelism.data_parallel_shard_degree", "-1"});
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_NE(r.out.find(c.where), std::string::npos) << r.out;
    EXPECT_LE(std::abs(plan_difference_percent(r.out)), 3.0) << r.out;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(total +([0-9.]+) GiB)"))) << r.out;
    EXPECT_GT(std::stod(m[1]), 40.0) << r.out;  // the whole rank, as a GPU would hold it
    ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(this process held ([0-9.]+) MiB)")))
        << r.out;
    EXPECT_LT(std::stod(m[1]), 1024.0) << r.out;
    for (const char* group : {"pp           (   8 ranks)  ", "tp           (   8 ranks)  ",
                              "dp_shard_cp  ("}) {
      EXPECT_NE(r.out.find(group), std::string::npos) << group << "\n" << r.out;
    }
  }
}

TEST(DryRunProcess, RequestsThatCannotBeADryRunAreOneLineAndExitTwo) {
  ProcessResult r = dry_run("configs/llama3_debug.yaml", 8, 8);
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("comm.fake_rank: 8 is not a rank of comm.fake_world_size 8"),
            std::string::npos) << r.err;
  r = testing::run_titan_train({"--config", testing::source_path("configs/llama3_debug.yaml"),
                                "--comm.mode", "local_tensor"});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("local-tensor"), std::string::npos) << r.err;
#ifdef TITAN_MPIEXEC
  r = testing::run_titan_train_mpi(
      2, {"--config", testing::source_path("configs/llama3_debug.yaml"), "--comm.mode",
          "fake_backend", "--comm.fake_world_size", "8"});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("start one process, not 2"), std::string::npos) << r.err;
#endif
}

}  // namespace
}  // namespace titan

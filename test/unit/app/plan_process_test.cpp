// titan-plan as a user runs it. schedule: the schedule's rows, bubbles and stages on stdout,
// the SVG picture. memory: one rank's memory by tag and the verdict, for GPU and CPU ranks,
// and titan-train's refusal to start a job whose plan does not fit. Bad requests are one
// line with exit 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/train_process.h"
#include "titan/build_config.h"

namespace titan {
namespace {

using testing::ProcessResult;

std::vector<std::string> debug_job(std::vector<std::string> extra) {
  std::vector<std::string> args = {"schedule", "--config",
                                   testing::source_path("configs/llama3_debug.yaml")};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(PlanProcess, PrintsAndDrawsTheSchedule) {
  const std::string svg =
      (std::filesystem::temp_directory_path() / "titan_plan_test_schedule.svg").string();
  const testing::ProcessResult r = testing::run_titan_plan(debug_job(
      {"--world-size", "4", "--parallelism.pipeline_parallel_degree", "2",
       "--parallelism.pipeline_parallel_schedule", "Interleaved1F1B", "--svg", svg}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // debug: local batch 8, microbatches of 1; 2 stages per rank over FSDP 2 x PP 2.
  EXPECT_NE(r.out.find("Interleaved1F1B: pp 2, 4 stages (2 per rank), 8 microbatches"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rank 1 ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("textbook (p-1)/(m+p-1) = 11.1%"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stage 3 on rank 1: layers.5, norm, output"),
            std::string::npos) << r.out;
  std::stringstream picture;
  picture << std::ifstream(svg).rdbuf();
  EXPECT_EQ(picture.str().rfind("<svg", 0), 0u);
  EXPECT_NE(picture.str().find("Interleaved1F1B"), std::string::npos);
}

TEST(PlanProcess, BadRequestsAreOneLineAndExitTwo) {
  const std::string bad_csv = testing::write_temp_file("titan_plan_bad.csv", "0F0,0B0\n");
  struct Case {
    std::vector<std::string> args;
    std::string expected;
  };
  const Case cases[] = {
      {{"--world-size", "2"}, "pipeline_parallel_degree is 1"},
      {{"--world-size", "2", "--parallelism.pipeline_parallel_degree", "2",
        "--parallelism.pipeline_parallel_schedule", "DualPipeV",
        "--parallelism.pipeline_parallel_microbatch_size", "4"},
       "DualPipeV"},
      {{"--world-size", "2", "--parallelism.pipeline_parallel_degree", "2",
        "--parallelism.pipeline_parallel_schedule", "PipelineScheduleSingle",
        "--parallelism.pipeline_parallel_schedule_csv", bad_csv},
       "row"},
      {{"--parallelism.pipeline_parallel_degree", "2"}, "--world-size"},
  };
  for (const Case& c : cases) {
    const testing::ProcessResult r = testing::run_titan_plan(debug_job(c.args));
    EXPECT_EQ(r.exit_code, 2) << c.expected << "\n" << r.out << r.err;
    EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << r.err;
  }
}

TEST(PlanProcess, MemoryListsOneRanksPeakAndWhetherItFits) {
  if (!TITAN_HAVE_HDF5) GTEST_SKIP() << "the 405B template enables checkpoints: no HDF5 here";
  // The 405B template's layout on 512 H100s.
  ProcessResult r = testing::run_titan_plan(
      {"memory", "--config", testing::source_path("configs/llama3_405b_512gpu.yaml"),
       "--world-size", "512"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("layout: pp 8 x dp_replicate 1 x dp_shard 8 x cp 1 x tp 8 (512 ranks)"),
            std::string::npos) << r.out;
  for (const char* tag : {"parameters ", "gradients ", "optimizer ", "parameters.unsharded ",
                          "gradients.unsharded ", "activations ", "communication ", "runtime "}) {
    EXPECT_NE(r.out.find("\n  " + std::string(tag)), std::string::npos) << tag << "\n" << r.out;
  }
  EXPECT_NE(r.out.find("\nfits: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("of 80.00 GiB per GPU"), std::string::npos) << r.out;

  // 8B on one GPU: the verdict names the layout that fits.
  r = testing::run_titan_plan({"memory", "--config", testing::source_path("configs/llama3_8b.yaml"),
                               "--world-size", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\ndoes not fit: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" ranks (dp_shard "), std::string::npos) << r.out;

  // CPU ranks share the host: 2 of them on 1 GiB have 512 MiB each.
  r = testing::run_titan_plan(
      {"memory", "--config", testing::source_path("configs/llama3_debug.yaml"), "--world-size",
       "2", "--device", "cpu", "--host-memory-gib", "1", "--ranks-per-host", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("CPU ranks"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1.00 GiB on the host / 2 ranks"), std::string::npos) << r.out;

  r = testing::run_titan_plan({"memory", "--config",
                               testing::source_path("configs/llama3_debug.yaml"), "--world-size",
                               "1", "--device", "tpu"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("--device takes cpu or gpu"), std::string::npos) << r.err;
}

// torchtitan's memory_estimation.enable: the plan in the start-up log, then training.
TEST(PlanProcess, MemoryEstimationLogsThePlanBeforeTraining) {
  const ProcessResult r = testing::run_titan_train(
      {"--config", testing::source_path("configs/llama3_debug.yaml"), "--training.dataset",
       "synthetic", "--training.steps", "1", "--metrics.peak_tflops", "1",
       "--memory_estimation.enable", "true"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const size_t plan = r.err.find("memory plan (memory_estimation.enable):");
  EXPECT_NE(plan, std::string::npos) << r.err;
  EXPECT_LT(plan, r.err.find("step: 1")) << r.err;
  EXPECT_NE(r.err.find("\nfits: "), std::string::npos) << r.err;
}

// The 8B model on 20 GiB (the test's stand-in for this machine's memory): one line naming
// the need and the fix, exit 2, before the model allocates (today's alternative: the kernel's
// kill, exit 137, no message).
TEST(PlanProcess, TrainingAModelThatCannotFitStopsBeforeAllocating) {
  setenv("TITAN_TEST_AVAILABLE_MEMORY", "21474836480", 1);
  const ProcessResult r = testing::run_titan_train(
      {"--config", testing::source_path("configs/llama3_debug.yaml"), "--model.flavor", "8B",
       "--training.dataset", "synthetic", "--training.seq_len", "1024", "--metrics.peak_tflops",
       "1"});
  unsetenv("TITAN_TEST_AVAILABLE_MEMORY");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("out of memory before starting: each rank needs "), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("20.00 GiB per rank is available"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace titan

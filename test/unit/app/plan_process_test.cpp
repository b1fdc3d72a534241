// titan-plan schedule as a user runs it: the schedule's rows, bubbles and stages on stdout,
// the SVG picture, and bad requests as one line with exit 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/train_process.h"

namespace titan {
namespace {

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

}  // namespace
}  // namespace titan

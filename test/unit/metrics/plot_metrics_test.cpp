// tools/plot_metrics.py, run as a user runs it (/usr/bin/python3, Debian's, with
// python3-matplotlib): two runs' metrics.jsonl in, one PNG out. The files hold what a real
// log can: a null (non-finite) loss, a step written twice by a resumed run, a half-written
// line, validation steps. Skipped, with the reason, where matplotlib is not installed.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/train_process.h"

namespace titan::metrics {
namespace {

namespace fs = std::filesystem;
using titan::testing::ProcessResult;
using titan::testing::run_process;
using titan::testing::source_path;

constexpr const char* kPython = "/usr/bin/python3";

class PlotMetrics : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "titan_plot_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    folder_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(folder_, ignored);
  }

  // <folder>/<run>/metrics.jsonl holding `text`; returns its path.
  std::string write_run(const std::string& run, const std::string& text) {
    fs::create_directories(folder_ / run);
    const fs::path path = folder_ / run / "metrics.jsonl";
    std::ofstream(path) << text;
    return path.string();
  }

  static bool has_matplotlib() {
    return fs::exists(kPython) && run_process(kPython, {"-c", "import matplotlib"}).exit_code == 0;
  }

  ProcessResult plot(const std::vector<std::string>& arguments) {
    std::vector<std::string> all = {source_path("tools/plot_metrics.py")};
    all.insert(all.end(), arguments.begin(), arguments.end());
    return run_process(kPython, all);
  }

  fs::path folder_;
};

TEST_F(PlotMetrics, WritesOnePngForTwoRuns) {
  if (!has_matplotlib()) GTEST_SKIP() << kPython << " lacks matplotlib (apt-get install python3-matplotlib)";
  const std::string first = write_run(
      "run_a",
      "{\"step\": 1, \"loss\": 8.08, \"grad_norm\": 0.5, \"lr\": 4e-04, \"tps\": 600, \"tflops\": 0.02, "
      "\"mfu\": 33.2, \"memory_gib\": 0.33, \"tokens\": 2048, \"elapsed_s\": 3.4}\n"
      "{\"step\": 5, \"loss\": null, \"grad_norm\": null, \"lr\": 8e-04, \"tps\": 580, \"tflops\": 0.02, "
      "\"mfu\": 32.0, \"memory_gib\": 0.33, \"tokens\": 10240, \"elapsed_s\": 17.0}\n"
      "{\"step\": 10, \"loss\": 7.1, \"grad_norm\": 0.6, \"lr\": 6e-04, \"tps\": 590, \"tflops\": 0.02, "
      "\"mfu\": 32.5, \"memory_gib\": 0.33, \"val_loss\": 7.2, \"val_perplexity\": 1339.4, "
      "\"tokens\": 20480, \"elapsed_s\": 35.0}\n"
      // A resumed run appends: step 10 again, which wins.
      "{\"step\": 10, \"loss\": 7.0, \"grad_norm\": 0.6, \"lr\": 6e-04, \"tps\": 595, \"tflops\": 0.02, "
      "\"mfu\": 32.7, \"memory_gib\": 0.33, \"tokens\": 20480, \"elapsed_s\": 36.0}\n"
      "{\"step\": 15, \"loss\": 6.8, \"grad_no");  // killed mid-line
  const std::string second = write_run(
      "run_b",
      "{\"step\": 1, \"loss\": 8.1, \"tps\": 1200, \"mfu\": 60.0, \"comm_percent\": 4.5, \"eta_s\": 20}\n"
      "{\"step\": 2, \"loss\": 7.9, \"tps\": 1250, \"mfu\": 61.0, \"comm_percent\": 4.1, \"eta_s\": 10}\n");
  const fs::path png = folder_ / "out" / "plot.png";

  const ProcessResult result = plot({first, second, "-o", png.string(), "--title", "two runs"});

  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("2 runs, 5 steps"), std::string::npos) << result.out;
  EXPECT_NE(result.err.find("metrics.jsonl:5 is not a metrics line"), std::string::npos) << result.err;
  ASSERT_TRUE(fs::exists(png));
  std::ifstream file(png, std::ios::binary);
  std::string signature(8, '\0');
  file.read(signature.data(), 8);
  EXPECT_EQ(signature, std::string("\x89PNG\r\n\x1a\n", 8));
  // Three labelled panels at 800x900 pixels: tens of kilobytes; a blank canvas is ~10 KB.
  const auto bytes = fs::file_size(png);
  EXPECT_GT(bytes, 20'000u);
  EXPECT_LT(bytes, 2'000'000u);
}

// Input errors are found before matplotlib is loaded, so this runs on any python3.
TEST_F(PlotMetrics, MissingOrEmptyFileIsOneLineAndExitCodeTwo) {
  if (!fs::exists(kPython)) GTEST_SKIP() << "no " << kPython;
  const ProcessResult missing = plot({(folder_ / "nowhere" / "metrics.jsonl").string(), "-o",
                                      (folder_ / "plot.png").string()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("plot_metrics: error: "), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("cannot be read"), std::string::npos) << missing.err;

  const ProcessResult empty = plot({write_run("empty", "\n"), "-o", (folder_ / "plot.png").string()});
  EXPECT_EQ(empty.exit_code, 2);
  EXPECT_NE(empty.err.find("holds no metrics lines"), std::string::npos) << empty.err;
  EXPECT_FALSE(fs::exists(folder_ / "plot.png"));
}

}  // namespace
}  // namespace titan::metrics

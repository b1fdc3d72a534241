// The step log: JSON Lines that parse line by line and round-trip doubles, null for
// non-finite values, append across loggers, a flush per line, the human line's layout,
// and the TFLOP/s and MFU arithmetic.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include "titan/core/error.h"
#include "titan/core/allocator.h"
#include "titan/metrics/metrics_processor.h"
#include "titan/metrics/step_log.h"

namespace titan::metrics {
namespace {

// A strict parser for what the log writes: one flat JSON object whose values are numbers
// (JSON's grammar, no NaN or Infinity) or null. Returns key -> value text, or nothing if
// the line is not such an object.
class FlatJson {
 public:
  static std::optional<std::map<std::string, std::string>> parse(const std::string& text) {
    FlatJson p(text);
    std::map<std::string, std::string> object;
    p.space();
    if (!p.take('{')) return std::nullopt;
    p.space();
    if (p.take('}')) return p.at_end() ? std::optional(object) : std::nullopt;
    do {
      p.space();
      std::string key;
      if (!p.string(key)) return std::nullopt;
      p.space();
      if (!p.take(':')) return std::nullopt;
      p.space();
      std::string value;
      if (!p.value(value) || !object.emplace(key, value).second) return std::nullopt;
      p.space();
    } while (p.take(','));
    if (!p.take('}')) return std::nullopt;
    p.space();
    return p.at_end() ? std::optional(object) : std::nullopt;
  }

 private:
  explicit FlatJson(const std::string& text) : s_(text) {}
  bool at_end() const { return i_ == s_.size(); }
  bool take(char c) {
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  void space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t')) ++i_;
  }
  bool digits() {
    const size_t start = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    return i_ > start;
  }
  bool string(std::string& out) {
    if (!take('"')) return false;
    while (i_ < s_.size() && s_[i_] != '"' && s_[i_] != '\\') out += s_[i_++];
    return take('"');
  }
  bool value(std::string& out) {
    const size_t start = i_;
    if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
    } else {
      take('-');
      if (take('0')) {
      } else if (!digits()) {
        return false;
      }
      if (take('.') && !digits()) return false;
      if (take('e') || take('E')) {
        if (!take('+')) take('-');
        if (!digits()) return false;
      }
    }
    out = s_.substr(start, i_ - start);
    return true;
  }
  const std::string& s_;
  size_t i_ = 0;
};

const std::vector<std::string> kKeys = {"step",   "loss", "grad_norm",  "lr",     "tps",
                                        "tflops", "mfu",  "memory_gib", "tokens", "elapsed_s"};

StepMetrics example(int64_t step) {
  StepMetrics m;
  m.step = step;
  m.loss = 7.1234;
  m.grad_norm = 1.2345;
  m.lr = 8e-4;
  m.tokens_per_second = 1234;
  m.tflops = 0.12;
  m.mfu_percent = 3.45;
  m.memory_gib = 0.12;
  m.tokens = 81920;
  m.elapsed_s = 12.5;
  return m;
}

std::vector<std::string> read_lines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A fresh folder per test, removed at the end.
class StepLoggerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = std::filesystem::temp_directory_path() /
            ("titan_step_log_" + std::string(info->name()) + "_" + std::to_string(getpid()));
    std::filesystem::remove_all(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::filesystem::path root_;
};

TEST(StepJsonLine, ExactText) {
  EXPECT_EQ(step_json_line(example(10)),
            "{\"step\": 10, \"loss\": 7.1234, \"grad_norm\": 1.2345, \"lr\": 8e-04, "
            "\"tps\": 1234, \"tflops\": 0.12, \"mfu\": 3.45, \"memory_gib\": 0.12, "
            "\"tokens\": 81920, \"elapsed_s\": 12.5}");
}

TEST(StepJsonLine, ParsesWithEveryKeyAndRoundTripsDoubles) {
  StepMetrics m = example(3);
  m.loss = 0.1 + 0.2;  // needs all 17 digits
  m.lr = 1.0 / 3.0 * 1e-4;
  m.elapsed_s = 1e-300;
  const auto object = FlatJson::parse(step_json_line(m));
  ASSERT_TRUE(object.has_value()) << step_json_line(m);
  for (const std::string& key : kKeys) EXPECT_EQ(object->count(key), 1u) << key;
  EXPECT_EQ(std::strtod(object->at("loss").c_str(), nullptr), m.loss);
  EXPECT_EQ(std::strtod(object->at("lr").c_str(), nullptr), m.lr);
  EXPECT_EQ(std::strtod(object->at("elapsed_s").c_str(), nullptr), m.elapsed_s);
  EXPECT_EQ(object->at("step"), "3");
}

TEST(StepJsonLine, NonFiniteValuesAreNull) {
  StepMetrics m = example(4);
  m.loss = std::numeric_limits<double>::quiet_NaN();
  m.grad_norm = std::numeric_limits<double>::infinity();
  m.mfu_percent = -std::numeric_limits<double>::infinity();
  const auto object = FlatJson::parse(step_json_line(m));
  ASSERT_TRUE(object.has_value()) << step_json_line(m);
  EXPECT_EQ(object->at("loss"), "null");
  EXPECT_EQ(object->at("grad_norm"), "null");
  EXPECT_EQ(object->at("mfu"), "null");
}

TEST(FlatJsonCheck, RejectsWhatIsNotJson) {
  // The checker above must be able to fail.
  EXPECT_FALSE(FlatJson::parse("{\"loss\": nan}").has_value());
  EXPECT_FALSE(FlatJson::parse("{\"loss\": inf}").has_value());
  EXPECT_FALSE(FlatJson::parse("{\"loss\": 1.}").has_value());
  EXPECT_FALSE(FlatJson::parse("{\"loss\": 1,}").has_value());
  EXPECT_FALSE(FlatJson::parse("{\"loss\": 1} x").has_value());
  EXPECT_TRUE(FlatJson::parse("{\"loss\": -1.5e-05, \"x\": null}").has_value());
}

TEST(StepLogLine, TorchtitanLayout) {
  EXPECT_EQ(step_log_line(example(10)),
            "step: 10  loss: 7.1234  grad_norm: 1.2345  lr: 8.0e-04  memory: 0.12GiB  "
            "tps: 1,234  tflops: 0.12  mfu: 3.45%");
  StepMetrics m = example(1);
  m.tokens_per_second = 1234567.4;
  EXPECT_NE(step_log_line(m).find("tps: 1,234,567  "), std::string::npos);
  m.tokens_per_second = 999.6;
  EXPECT_NE(step_log_line(m).find("tps: 1,000  "), std::string::npos);
  m.tokens_per_second = 12;
  EXPECT_NE(step_log_line(m).find("tps: 12  "), std::string::npos);
  m.loss = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(step_log_line(m).find("loss: nan  "), std::string::npos) << step_log_line(m);
}

TEST(Throughput, TflopsAndMfu) {
  // 6e9 FLOPs a token at 10,000 tokens/s: 60 TFLOP/s; of a 989 TFLOP/s peak, 6.07%.
  EXPECT_DOUBLE_EQ(achieved_tflops(6e9, 1e4), 60.0);
  EXPECT_DOUBLE_EQ(mfu_percent(60.0, 989.0), 100.0 * 60.0 / 989.0);
  EXPECT_THROW(mfu_percent(1.0, 0.0), Error);
}

TEST_F(StepLoggerTest, CreatesTheFolderAndFlushesEachLine) {
  const std::filesystem::path dump = root_ / "nested" / "outputs";
  StepLogger logger(dump);
  EXPECT_EQ(logger.path(), dump / "metrics.jsonl");
  ASSERT_TRUE(std::filesystem::is_directory(dump));
  logger.log(example(1));
  // Read while the logger is alive: the line must already be on disk.
  std::vector<std::string> lines = read_lines(logger.path());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], step_json_line(example(1)));
  logger.log(example(2));
  lines = read_lines(logger.path());
  ASSERT_EQ(lines.size(), 2u);
  for (const std::string& line : lines) EXPECT_TRUE(FlatJson::parse(line).has_value()) << line;
}

TEST_F(StepLoggerTest, AppendKeepsEarlierLines) {
  {
    StepLogger first(root_);
    first.log(example(1));
    first.log(example(2));
  }
  StepLogger second(root_);
  second.log(example(3));
  const std::vector<std::string> lines = read_lines(second.path());
  ASSERT_EQ(lines.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lines[size_t(i)], step_json_line(example(i + 1)));
}

// The first step line's communication is the first step's own: what the mesh and a
// checkpoint load moved before it (the totals begin_step is given) is left out.
TEST_F(StepLoggerTest, FirstStepCommunicationLeavesOutStartUp) {
  config::JobConfig config;
  config.job.dump_folder = root_.string();
  config.metrics.enable_tensorboard = false;
  MetricsProcessor metrics(config, {0, 2, 1.0, 1.0}, allocator_for(Device::cpu()),
                           [](double value) { return value; });
  const int64_t mib = int64_t(1) << 20;
  metrics.begin_step(1, 0, {1000.0, 64 * mib});  // start-up: 1000 s blocked, 64 MiB
  StepValues step;
  step.step = 1;
  step.tokens_seen = 4096;
  step.comm_wait_s = 1000.0;  // nothing blocked during the step
  step.comm_bytes = 67 * mib;
  metrics.report_step(step);
  const std::vector<std::string> lines = read_lines(root_ / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 1u);
  const auto json = FlatJson::parse(lines[0]);
  ASSERT_TRUE(json.has_value()) << lines[0];
  EXPECT_EQ(std::stod(json->at("comm_mib_per_step")), 3.0) << lines[0];
  EXPECT_EQ(std::stod(json->at("comm_percent")), 0.0) << lines[0];
}

TEST_F(StepLoggerTest, FailsWhenTheFolderCannotBeMade) {
  std::filesystem::create_directories(root_);
  std::ofstream(root_ / "file") << "x";
  EXPECT_THROW(StepLogger(root_ / "file" / "sub"), Error);
}

}  // namespace
}  // namespace titan::metrics

namespace titan::metrics {
namespace {

TEST(StepLogExtras, EtaCommAndValidationAppearOnlyWhenSet) {
  StepMetrics m;
  m.step = 3;
  const std::string plain = step_log_line(m);
  EXPECT_EQ(plain.find("eta:"), std::string::npos) << plain;
  EXPECT_EQ(plain.find("comm:"), std::string::npos) << plain;
  m.eta_s = 425;
  m.comm_percent = 3.25;
  m.val_loss = 2.0;
  m.val_perplexity = 7.389;
  const std::string line = step_log_line(m);
  EXPECT_NE(line.find("  comm: 3.2%"), std::string::npos) << line;
  EXPECT_NE(line.find("  eta: 7m05s"), std::string::npos) << line;
  EXPECT_NE(line.find("  val_loss: 2.0000  val_ppl: 7.4"), std::string::npos) << line;
  const std::string json = step_json_line(m);
  for (const char* key : {"\"eta_s\": 425", "\"comm_percent\": 3.25", "\"val_loss\": 2",
                          "\"val_perplexity\": 7.389"}) {
    EXPECT_NE(json.find(key), std::string::npos) << key << " in " << json;
  }
}

TEST(StepLogExtras, BusyTimesNameTheSlowestRank) {
  StepMetrics m;
  m.step = 4;
  EXPECT_EQ(step_log_line(m).find("busy:"), std::string::npos);
  m.busy = StepMetrics::BusyTimes{0.25, 0.5, 1.5, 3, "rank 3 (dp_shard 1, tp 1)"};
  const std::string line = step_log_line(m);
  EXPECT_NE(line.find("  busy: 0.25/0.5/1.5s slowest rank 3 (dp_shard 1, tp 1)"),
            std::string::npos)
      << line;
  const std::string json = step_json_line(m);
  for (const char* key : {"\"busy_s_min\": 0.25", "\"busy_s_median\": 0.5",
                          "\"busy_s_max\": 1.5", "\"slowest_rank\": 3"}) {
    EXPECT_NE(json.find(key), std::string::npos) << key << " in " << json;
  }
}

}  // namespace
}  // namespace titan::metrics

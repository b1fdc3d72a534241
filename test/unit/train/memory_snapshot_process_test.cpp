// profiling.enable_memory_snapshot: every profile_freq steps, and when a step runs out of
// memory, each rank writes what its allocator's peak was made of, by tag, adding up to the
// peak exactly (metrics/memory_snapshot.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "support/train_process.h"
#include "titan/build_config.h"

namespace titan {
namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const fs::path& file) {
  std::ifstream in(file);
  EXPECT_TRUE(bool(in)) << file;
  return nlohmann::json::parse(in);  // throws if it is not JSON
}

std::map<std::string, int64_t> bytes_by_tag(const nlohmann::json& list) {
  std::map<std::string, int64_t> bytes;
  for (const nlohmann::json& u : list) bytes[u.at("tag").get<std::string>()] = u.at("bytes").get<int64_t>();
  return bytes;
}

int64_t sum_of(const nlohmann::json& list) {
  int64_t sum = 0;
  for (const nlohmann::json& u : list) sum += u.at("bytes").get<int64_t>();
  return sum;
}

std::vector<std::string> tiny_run(const fs::path& dump) {
  return {"--model.flavor", "tiny", "--training.dataset", "synthetic", "--training.seq_len", "32",
          "--training.local_batch_size", "2", "--training.steps", "4", "--metrics.peak_tflops", "1",
          "--profiling.enable_memory_snapshot", "--profiling.profile_freq", "2",
          // Every layer keeps its whole record, so all show the same bytes.
          "--activation_checkpoint.mode", "none", "--job.dump_folder", dump.string()};
}

// What every snapshot of the tiny model (8 layers) must show, on any rank and mesh.
void expect_tagged_peak(const nlohmann::json& s, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(s.at("format"), "titan.memory_snapshot");
  EXPECT_EQ(s.at("device"), "cpu");
  EXPECT_EQ(sum_of(s.at("at_peak")), s.at("peak_bytes").get<int64_t>());
  EXPECT_EQ(sum_of(s.at("now")), s.at("current_bytes").get<int64_t>());
  EXPECT_GT(s.at("peak_bytes").get<int64_t>(), 0);
  const std::map<std::string, int64_t> peak = bytes_by_tag(s.at("at_peak"));
  auto at = [&](const std::string& tag) { return peak.count(tag) ? peak.at(tag) : 0; };
  EXPECT_GT(at("parameters"), 0);
  EXPECT_EQ(at("gradients"), at("parameters"));   // one gradient per parameter shard
  EXPECT_EQ(at("optimizer"), 2 * at("parameters"));  // exp_avg and exp_avg_sq
  for (int layer = 0; layer < 8; ++layer) {
    // Every layer keeps the same activations (same shapes, one microbatch).
    EXPECT_EQ(at("activations/layers." + std::to_string(layer)), at("activations/layers.0"));
  }
  EXPECT_GT(at("activations/layers.0"), 0);
  EXPECT_GT(at("activations/output"), 0);
  EXPECT_EQ(at("other"), 0) << "an allocation at the peak has no tag";
}

TEST(MemorySnapshotProcess, OneRankWritesTheTaggedPeakEveryProfileFreqSteps) {
  const fs::path dump = fs::temp_directory_path() / "titan_memory_snapshot_1";
  fs::remove_all(dump);
  const testing::ProcessResult r = testing::run_titan_train(tiny_run(dump));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int step : {2, 4}) {
    const fs::path file = dump / "memory_snapshot" / ("iteration_" + std::to_string(step)) /
                          "rank0_memory_snapshot.json";
    ASSERT_TRUE(fs::exists(file)) << file;
    const nlohmann::json s = read_json(file);
    expect_tagged_peak(s, file.string());
    EXPECT_EQ(s.at("step"), step);
    EXPECT_EQ(s.at("reason"), "profile_freq");
    // The peak window starts after the previous step line: step 1's (the first step of a
    // run always logs), then none before step 10 (metrics.log_freq's default).
    EXPECT_EQ(s.at("peak_steps"), nlohmann::json::array({2, step}));
  }
  EXPECT_FALSE(fs::exists(dump / "memory_snapshot" / "iteration_1"));
  EXPECT_FALSE(fs::exists(dump / "memory_snapshot" / "iteration_3"));
}

// A step that runs out of memory leaves torchtitan's iteration_<step - 1>_exit snapshot of
// what was live, and the run fails with exit 1 naming the allocation.
TEST(MemorySnapshotProcess, OutOfMemoryWritesAnExitSnapshot) {
  const fs::path dump = fs::temp_directory_path() / "titan_memory_snapshot_oom";
  fs::remove_all(dump);
  ::setenv("TITAN_TEST_FAULT", "oom:0:3", 1);
  const testing::ProcessResult r = testing::run_titan_train(tiny_run(dump));
  ::unsetenv("TITAN_TEST_FAULT");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("out of host memory allocating"), std::string::npos) << r.err;
  const fs::path file = dump / "memory_snapshot" / "iteration_2_exit" / "rank0_memory_snapshot.json";
  ASSERT_TRUE(fs::exists(file)) << file;
  const nlohmann::json s = read_json(file);
  EXPECT_EQ(s.at("reason"), "out_of_memory");
  EXPECT_EQ(s.at("step"), 3);
  EXPECT_EQ(sum_of(s.at("now")), s.at("current_bytes").get<int64_t>());
  EXPECT_GT(bytes_by_tag(s.at("now")).at("parameters"), 0);
}

#if TITAN_HAVE_MPI
// FSDP on 2 ranks: each rank's peak also holds its gathered copies and flat buffers, and
// its parameter shard is half of the one-rank parameters (the tiny model's rows split).
TEST(MemorySnapshotProcess, FsdpRanksTagGatheredCopiesAndCommunicationBuffers) {
  const fs::path dump = fs::temp_directory_path() / "titan_memory_snapshot_2";
  fs::remove_all(dump);
  const testing::ProcessResult r = testing::run_titan_train_mpi(2, tiny_run(dump));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int rank : {0, 1}) {
    const fs::path file = dump / "memory_snapshot" / "iteration_4" /
                          ("rank" + std::to_string(rank) + "_memory_snapshot.json");
    ASSERT_TRUE(fs::exists(file)) << file;
    const nlohmann::json s = read_json(file);
    expect_tagged_peak(s, file.string());
    EXPECT_EQ(s.at("rank"), rank);
    const std::map<std::string, int64_t> peak = bytes_by_tag(s.at("at_peak"));
    EXPECT_GT(peak.count("communication") ? peak.at("communication") : 0, 0);
    EXPECT_GT(peak.count("parameters.unsharded") ? peak.at("parameters.unsharded") : 0, 0);
  }
}
#endif

}  // namespace
}  // namespace titan

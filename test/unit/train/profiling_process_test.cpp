// profiling.*: Chrome trace-event JSON per rank at the end of each recorded window, with
// spans named by what ran (layers, their split backward, ops, collectives with bytes,
// checkpoint I/O), nested by time (core/trace.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/train_process.h"
#include "titan/build_config.h"

namespace titan {
namespace {

#if TITAN_HAVE_MPI && TITAN_HAVE_HDF5
namespace fs = std::filesystem;

struct Span {
  std::string name;
  double start, end;
  nlohmann::json args;
};

std::vector<Span> main_thread_spans(const fs::path& file) {
  std::ifstream in(file);
  const nlohmann::json trace = nlohmann::json::parse(in);  // throws if it is not JSON
  std::map<uint64_t, std::vector<Span>> by_thread;
  for (const nlohmann::json& e : trace.at("traceEvents")) {
    EXPECT_EQ(e.at("ph"), "X");
    const double ts = e.at("ts"), dur = e.at("dur");
    by_thread[e.at("tid").get<uint64_t>()].push_back(
        {e.at("name"), ts, ts + dur, e.contains("args") ? e.at("args") : nlohmann::json()});
  }
  // The training thread has the most spans (the "step" span encloses them all).
  std::vector<Span> spans;
  for (auto& [tid, list] : by_thread) {
    if (list.size() > spans.size()) spans = list;
  }
  return spans;
}

TEST(ProfilingProcess, TracesPerRankWithNestedSpansNamedByWhatRan) {
  const fs::path dump = fs::temp_directory_path() / "titan_profiling_test";
  fs::remove_all(dump);
  const testing::ProcessResult r = testing::run_titan_train_mpi(
      2, {"--model.flavor", "tiny", "--training.dataset", "synthetic", "--training.seq_len", "32",
          "--training.local_batch_size", "2", "--training.steps", "4", "--metrics.peak_tflops", "1",
          "--profiling.enable_profiling", "--profiling.profile_freq", "2",
          "--profiling.profiler_warmup", "0", "--profiling.profiler_active", "1",
          "--checkpoint.enable", "--checkpoint.interval", "2", "--job.dump_folder", dump.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int step : {2, 4}) {
    for (int rank : {0, 1}) {
      const fs::path file = dump / "profile_traces" / ("iteration_" + std::to_string(step)) /
                            ("rank" + std::to_string(rank) + "_trace.json");
      ASSERT_TRUE(fs::exists(file)) << file;
      std::vector<Span> spans = main_thread_spans(file);
      auto has = [&](const std::string& name) {
        return std::any_of(spans.begin(), spans.end(), [&](const Span& s) { return s.name == name; });
      };
      for (const std::string& name : {"step " + std::to_string(step), std::string("forward"),
                                     std::string("backward"), std::string("layers.3.forward"),
                                     std::string("layers.3.backward_input"),
                                     std::string("layers.3.backward_weight"), std::string("attention"),
                                     std::string("feed_forward"), std::string("optimizer"),
                                     // op spans (ops/dispatch.h)
                                     std::string("matmul"), std::string("attention_forward"),
                                     std::string("attention_backward"),
                                     std::string("rmsnorm_forward"), std::string("adamw_step_multi_tensor")}) {
        EXPECT_TRUE(has(name)) << name << " in " << file;
      }
      EXPECT_FALSE(has("step " + std::to_string(step - 1))) << "only the active step is recorded";
      const auto collective = std::find_if(spans.begin(), spans.end(), [](const Span& s) {
        return s.name.rfind("all_gather of", 0) == 0 && s.args.contains("bytes");
      });
      ASSERT_NE(collective, spans.end()) << file;
      EXPECT_GT(collective->args.at("bytes").get<int64_t>(), 0);
      EXPECT_TRUE(std::any_of(spans.begin(), spans.end(), [](const Span& s) {
        return s.name.rfind("checkpoint.write", 0) == 0;
      })) << file;
      // Spans on one thread nest: sorted by start (longer first on ties), each one ends
      // inside every span still open when it starts.
      std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
        return a.start < b.start || (a.start == b.start && a.end > b.end);
      });
      std::vector<Span> open;
      for (const Span& s : spans) {
        while (!open.empty() && open.back().end <= s.start) open.pop_back();
        if (!open.empty()) {
          EXPECT_LE(s.end, open.back().end + 1e-3) << s.name << " overlaps " << open.back().name;
        }
        open.push_back(s);
      }
    }
  }
}
#endif

}  // namespace
}  // namespace titan

// The step log: what rank 0 says about a training step, to a person and to a file.
//
//   StepLogger logger(config.job.dump_folder);       // appends to <dump>/metrics.jsonl
//   StepMetrics m{.step = 10, .loss = 7.1234, ...};
//   m.tflops = achieved_tflops(flops_per_token, m.tokens_per_second);
//   m.mfu_percent = mfu_percent(m.tflops, peak_tflops);
//   logger.log(m);
//
// Person: one line through log::info, torchtitan's layout (with the rate added):
//   step: 10  loss: 7.1234  grad_norm: 1.2345  lr: 8.0e-04  memory: 0.12GiB  tps: 1,234  tflops: 0.12  mfu: 3.45%  comm: 2.1%
// (comm and "busy: 0.41/0.42/0.55s slowest rank 3 (pp 0, dp_shard 1, tp 1)" only with
// several ranks; "val_loss: 7.01  val_ppl: 1108.2" at validation steps; "eta: 1h02m" to
// training.steps).
// File: one JSON object per line (JSON Lines), keys step, loss, grad_norm, lr, tps, tflops,
// mfu, memory_gib, [comm_percent, comm_mib_per_step, busy_s_min, busy_s_median, busy_s_max,
// slowest_rank,] [val_loss, val_perplexity,] tokens, elapsed_s. Doubles are written in the shortest form
// that reads back to the same bits, so a plot or a test sees exactly what the trainer
// had; a non-finite value (a diverged loss) is written as null, which keeps the line JSON.
// The file is opened for append, so a resumed run continues the same record, and each
// line is flushed as it is written: a run killed mid-way leaves every logged step on disk.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace titan::metrics {

struct StepMetrics {
  int64_t step = 0;
  double loss = 0.0;               // global token-mean loss of the step
  double grad_norm = 0.0;          // global L2 norm before clipping
  double lr = 0.0;                 // the rate this step used
  double tokens_per_second = 0.0;  // per device, averaged since the previous line
  double tflops = 0.0;             // per device: achieved_tflops()
  double mfu_percent = 0.0;        // mfu_percent()
  double memory_gib = 0.0;         // peak allocator bytes since the previous line, in GiB
                                   // (the largest over ranks)
  // Share of the time since the previous line spent waiting on communication (the
  // largest over ranks); unset on one rank.
  std::optional<double> comm_percent;
  // MiB a rank moved through its communicators per step since the previous line (the
  // largest over ranks; the counters' bytes, distributed/communicator.h); unset on one rank.
  std::optional<double> comm_mib_per_step;
  // Stragglers: each rank's busy seconds per step since the previous line (its time not
  // blocked on communication), over the ranks: min, median, max, and the slowest rank with
  // its mesh coordinates. Unset on one rank.
  struct BusyTimes {
    double min_s = 0, median_s = 0, max_s = 0;
    int64_t slowest_rank = 0;
    std::string slowest;  // "rank 3 (pp 0, dp_shard 1, tp 1)"
  };
  std::optional<BusyTimes> busy;
  // Seconds to training.steps at the rate since the previous line; unset when unknown.
  std::optional<double> eta_s;
  // Validation loss and perplexity, at validation steps only.
  std::optional<double> val_loss, val_perplexity;
  // Mixture-of-experts models: the step's worst layer, its most-loaded expert's picks over
  // the mean (1 is perfect balance), and that layer's index.
  std::optional<double> moe_load_imbalance;
  int64_t moe_worst_layer = -1;
  int64_t tokens = 0;              // tokens trained on so far, all ranks
  double elapsed_s = 0.0;          // wall time since training started
};

// TFLOP/s achieved per device: flops_per_token * tokens_per_second / 1e12.
double achieved_tflops(double flops_per_token, double tokens_per_second);
// Model FLOPs utilization in percent: 100 * tflops / peak_tflops (peak_tflops > 0).
double mfu_percent(double tflops, double peak_tflops);

// The human line and the JSON object (no newline) for one step.
std::string step_log_line(const StepMetrics& metrics);
std::string step_json_line(const StepMetrics& metrics);

class StepLogger {
 public:
  static constexpr const char* kFileName = "metrics.jsonl";

  // Creates dump_folder if needed and opens <dump_folder>/metrics.jsonl for append.
  explicit StepLogger(const std::filesystem::path& dump_folder);

  // Appends and flushes the JSON line, then logs the human line.
  void log(const StepMetrics& metrics);
  const std::filesystem::path& path() const { return path_; }

 private:
  struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };
  std::filesystem::path path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
};

}  // namespace titan::metrics

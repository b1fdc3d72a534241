#include "titan/metrics/metrics_processor.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "titan/core/logging.h"
#include "titan/core/trace.h"
#include "titan/metrics/memory_snapshot.h"

namespace titan::metrics {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// One step's scalars under torchtitan's tag names (components/metrics.py); the comm share and
// validation perplexity are titan.cpp's, placed in torchtitan's groups.
void write_tensorboard(TensorBoardWriter& tensorboard, const StepMetrics& m) {
  tensorboard.add_scalar("loss_metrics/global_avg_loss", m.loss, m.step);
  tensorboard.add_scalar("grad_norm", m.grad_norm, m.step);
  tensorboard.add_scalar("lr", m.lr, m.step);
  tensorboard.add_scalar("n_tokens_seen", double(m.tokens), m.step);
  tensorboard.add_scalar("throughput(tps)", m.tokens_per_second, m.step);
  tensorboard.add_scalar("tflops", m.tflops, m.step);
  tensorboard.add_scalar("mfu(%)", m.mfu_percent, m.step);
  tensorboard.add_scalar("memory/max_active(GiB)", m.memory_gib, m.step);
  if (m.comm_percent) tensorboard.add_scalar("time_metrics/comm_wait(%)", *m.comm_percent, m.step);
  if (m.comm_mib_per_step) {
    tensorboard.add_scalar("comm/mib_per_step", *m.comm_mib_per_step, m.step);
  }
  if (m.moe_load_imbalance) {
    tensorboard.add_scalar("moe/load_imbalance", *m.moe_load_imbalance, m.step);
  }
  if (m.val_loss) tensorboard.add_scalar("validation_metrics/loss", *m.val_loss, m.step);
  if (m.val_perplexity) {
    tensorboard.add_scalar("validation_metrics/perplexity", *m.val_perplexity, m.step);
  }
  tensorboard.flush();
}

std::filesystem::path rank_file(const config::JobConfig& config, const std::string& folder,
                                const std::string& iteration, int rank, const char* suffix) {
  return std::filesystem::path(config.job.dump_folder) / folder / ("iteration_" + iteration) /
         ("rank" + std::to_string(rank) + suffix);
}

}  // namespace

MetricsProcessor::MetricsProcessor(const config::JobConfig& config, const RunInfo& run,
                                   Allocator& allocator, MaxOverRanks max_over_ranks,
                                   GatherOverRanks gather_over_ranks)
    : config_(config),
      run_(run),
      allocator_(allocator),
      max_over_ranks_(std::move(max_over_ranks)),
      gather_over_ranks_(std::move(gather_over_ranks)) {
  if (run.rank == 0) logger_ = std::make_unique<StepLogger>(config.job.dump_folder);
  if (config.metrics.enable_tensorboard && (run.rank == 0 || config.metrics.save_for_all_ranks)) {
    // torchtitan's layout, less its per-launch date folder: a resumed run's new file
    // continues the same curves.
    std::filesystem::path folder =
        std::filesystem::path(config.job.dump_folder) / config.metrics.save_tb_folder;
    if (config.metrics.save_for_all_ranks) folder /= "rank_" + std::to_string(run.rank);
    tensorboard_ = std::make_unique<TensorBoardWriter>(folder);
  }
}

MetricsProcessor::~MetricsProcessor() = default;

bool MetricsProcessor::profiled(int64_t step) const {
  const config::ProfilingSection& p = config_.profiling;
  return p.enable_profiling && (step - 1) % p.profile_freq >= p.profile_freq - p.profiler_active;
}

bool MetricsProcessor::step_line_due(int64_t step, bool validated) const {
  return steps_this_run_ == 1 || step % config_.metrics.log_freq == 0 || validated;
}

void MetricsProcessor::begin_step(int64_t step, int64_t tokens_seen, const CommTotals& comm) {
  // The first step of this run (a resumed run starts after the checkpoint's step).
  if (steps_this_run_++ == 0) {
    started_s_ = last_log_s_ = now_s();
    last_log_tokens_ = tokens_seen;
    last_log_comm_wait_s_ = comm.wait_s;
    last_log_comm_bytes_ = comm.bytes;
    last_log_step_ = step - 1;
    allocator_.reset_peak();
  }
  TraceRecorder& recorder = trace_recorder();
  if (profiled(step) && !recorder.recording()) recorder.start();
}

void MetricsProcessor::report_step(const StepValues& values) {
  const int64_t step = values.step;
  // Before the step line, which starts a new peak window.
  if (config_.profiling.enable_memory_snapshot && step % config_.profiling.profile_freq == 0) {
    write_memory_snapshot(step, std::to_string(step), "profile_freq");
  }
  if (step_line_due(step, values.val_loss.has_value())) log_step(values);
}

void MetricsProcessor::end_step(int64_t step) {
  TraceRecorder& recorder = trace_recorder();
  if (recorder.recording() && !profiled(step + 1)) {
    recorder.stop();
    const std::filesystem::path file = rank_file(config_, config_.profiling.save_traces_folder,
                                                 std::to_string(step), run_.rank, "_trace.json");
    recorder.write(file.string(), run_.rank);
    if (run_.rank == 0) log::info("trace of step %lld in %s", (long long)step, file.c_str());
  }
}

void MetricsProcessor::out_of_memory(int64_t step) {
  // torchtitan's name for the snapshot of a step that ran out of memory.
  if (config_.profiling.enable_memory_snapshot) {
    write_memory_snapshot(step, std::to_string(step - 1) + "_exit", "out_of_memory");
  }
}

void MetricsProcessor::write_memory_snapshot(int64_t step, const std::string& iteration,
                                             const std::string& reason) const {
  MemorySnapshotInfo info;
  info.rank = run_.rank;
  info.step = step;
  info.reason = reason;
  info.peak_first_step = last_log_step_ + 1;
  info.peak_last_step = step;
  const std::filesystem::path file =
      rank_file(config_, config_.profiling.save_memory_snapshot_folder, iteration, run_.rank,
                "_memory_snapshot.json");
  metrics::write_memory_snapshot(file.string(), allocator_, info);
  if (info.rank == 0) {
    log::info("memory snapshot of step %lld in %s", (long long)step, file.c_str());
  }
}

void MetricsProcessor::log_step(const StepValues& v) {
  const double now = now_s();
  StepMetrics m;
  m.step = v.step;
  m.loss = v.loss;
  m.grad_norm = v.grad_norm;
  m.lr = v.lr;
  m.val_loss = v.val_loss;
  m.val_perplexity = v.val_perplexity;
  m.moe_load_imbalance = v.moe_load_imbalance;
  m.moe_worst_layer = v.moe_worst_layer;
  const double interval = std::max(now - last_log_s_, 1e-9);
  m.tokens_per_second =
      double(v.tokens_seen - last_log_tokens_) / double(run_.world_size) / interval;
  m.tflops = achieved_tflops(run_.flops_per_token, m.tokens_per_second);
  m.mfu_percent = mfu_percent(m.tflops, run_.peak_tflops);
  // Every rank takes part: the line shows the largest memory and communication share.
  last_peak_bytes_ = allocator_.stats().peak_bytes;
  last_peak_usage_ = allocator_.usage_at_peak();
  m.memory_gib = max_over_ranks_(double(last_peak_bytes_)) / double(int64_t(1) << 30);
  allocator_.reset_peak();
  if (run_.world_size > 1) {
    m.comm_percent = max_over_ranks_(100.0 * (v.comm_wait_s - last_log_comm_wait_s_) / interval);
  }
  const double window_comm_wait_s = last_log_comm_wait_s_;
  last_log_comm_wait_s_ = v.comm_wait_s;
  m.tokens = v.tokens_seen;
  const int64_t steps_since = v.step - last_log_step_;
  if (run_.world_size > 1 && steps_since > 0) {
    m.comm_mib_per_step = max_over_ranks_(double(v.comm_bytes - last_log_comm_bytes_) /
                                          double(steps_since) / double(1 << 20));
  }
  last_log_comm_bytes_ = v.comm_bytes;
  if (run_.world_size > 1 && steps_since > 0 && gather_over_ranks_) {
    // Busy: the window's time not blocked on communication, per step. A slow rank shows
    // here; the ranks waiting for it show as communication instead.
    const double busy = std::max(interval - (v.comm_wait_s - window_comm_wait_s), 0.0) /
                        double(steps_since);
    std::vector<double> all = gather_over_ranks_(busy);
    StepMetrics::BusyTimes b;
    const auto slowest = std::max_element(all.begin(), all.end());
    b.slowest_rank = slowest - all.begin();
    b.max_s = *slowest;
    b.min_s = *std::min_element(all.begin(), all.end());
    std::nth_element(all.begin(), all.begin() + all.size() / 2, all.end());
    b.median_s = all[all.size() / 2];
    b.slowest = run_.describe_rank ? run_.describe_rank(b.slowest_rank)
                                   : "rank " + std::to_string(b.slowest_rank);
    m.busy = b;
  }
  if (steps_since > 0 && v.step < config_.training.steps) {
    m.eta_s = interval / double(steps_since) * double(config_.training.steps - v.step);
  }
  last_log_step_ = v.step;
  m.elapsed_s = now - started_s_;
  if (logger_) logger_->log(m);
  if (tensorboard_) write_tensorboard(*tensorboard_, m);
  last_log_s_ = now;
  last_log_tokens_ = v.tokens_seen;
}

}  // namespace titan::metrics

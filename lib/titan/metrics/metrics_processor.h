// Everything a training run reports, behind one object the trainer calls at fixed points of
// each step (torchtitan's MetricsProcessor): the step line and metrics.jsonl (step_log.h),
// TensorBoard scalars (tensorboard.h), the profiling schedule of traces (core/trace.h) and
// memory snapshots (memory_snapshot.h).
//
//   MetricsProcessor metrics(config, {rank, world_size, flops_per_token, peak_tflops},
//                            allocator, max_over_ranks);
//   for each step:
//     metrics.begin_step(step, tokens_seen, comm);   // timing windows, profiler on
//     ... train, validate ...
//     metrics.report_step({step, loss, grad_norm, lr, tokens_seen, comm_wait_s, val_loss});
//     ... save a checkpoint ...                      // (its spans are in the trace)
//     metrics.end_step(step);                        // profiler off after its window
//   on an out-of-memory error: metrics.out_of_memory(step);
//
// It receives values and writes files; it computes nothing across ranks itself. The two
// values the line shows for the whole job (the largest peak memory and communication share
// over ranks) come from `max_over_ranks`, a collective the trainer provides, so report_step
// is collective whenever a step line is due (every rank calls it at every step).
//
// When, with torchtitan's rules:
//   step line   the first step of a run, every metrics.log_freq steps, and validation steps;
//               rank 0 writes it and metrics.jsonl, TensorBoard rank 0 (or every rank with
//               metrics.save_for_all_ranks) into <dump>/<save_tb_folder>[/rank_<r>]
//   traces      profiling.*: each cycle of profile_freq steps waits, warms up
//               profiler_warmup steps, then records profiler_active; the window's spans go
//               to <dump>/<save_traces_folder>/iteration_<last step>/rank<r>_trace.json
//   snapshots   every profile_freq steps with profiling.enable_memory_snapshot, of the peak
//               since the previous step line, in <dump>/<save_memory_snapshot_folder>/
//               iteration_<step>/rank<r>_memory_snapshot.json; iteration_<step - 1>_exit/
//               for a step that runs out of memory
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/core/allocator.h"
#include "titan/metrics/step_log.h"
#include "titan/metrics/tensorboard.h"

namespace titan::metrics {

// What stays the same through a run.
struct RunInfo {
  int rank = 0;
  int world_size = 1;
  double flops_per_token = 0;  // the model's training FLOPs per token
  double peak_tflops = 0;      // the MFU denominator, per device
  // A rank as the straggler report names it: "rank 3 (pp 0, dp_shard 1, tp 1)".
  std::function<std::string(int64_t rank)> describe_rank;
};

// This rank's communication since the start: seconds blocked and bytes its communicators
// counted (communicator.h).
struct CommTotals {
  double wait_s = 0;
  int64_t bytes = 0;
};

// One finished step, as this rank saw it.
struct StepValues {
  int64_t step = 0;
  double loss = 0, grad_norm = 0, lr = 0;
  int64_t tokens_seen = 0;   // all ranks, since the start of training
  double comm_wait_s = 0;    // this rank's total seconds blocked on communication so far
  int64_t comm_bytes = 0;    // the bytes its communicators counted so far (communicator.h)
  std::optional<double> val_loss, val_perplexity;  // at validation steps
  // Mixture-of-experts models: the worst layer's most-loaded expert over the mean, and the
  // layer (train/trainer.h, StepResult).
  std::optional<double> moe_load_imbalance;
  int64_t moe_worst_layer = -1;
};

class MetricsProcessor {
 public:
  // The largest of a value over every rank (collective); on one rank, the value.
  using MaxOverRanks = std::function<double(double)>;
  // Every rank's value, by rank (collective); on one rank, {value}.
  using GatherOverRanks = std::function<std::vector<double>(double)>;

  MetricsProcessor(const config::JobConfig& config, const RunInfo& run, Allocator& allocator,
                   MaxOverRanks max_over_ranks, GatherOverRanks gather_over_ranks = {});
  ~MetricsProcessor();

  // At the start of every step: the first step of this run starts the timing windows, the
  // peak and the communication counts (`comm`: this rank's totals so far, so that start-up
  // traffic such as the mesh's and a checkpoint load's is not put on the first step);
  // profiling starts recording when `step` is in a window.
  void begin_step(int64_t step, int64_t tokens_seen, const CommTotals& comm = {});
  // After every step's update and validation, on every rank: the memory snapshot and the
  // step line when due.
  void report_step(const StepValues& values);
  // Last thing of every step: the trace, when the step ends a profiling window.
  void end_step(int64_t step);
  // A step that ran out of memory: the snapshot torchtitan writes for it.
  void out_of_memory(int64_t step);

  bool step_line_due(int64_t step, bool validated) const;
  bool profiled(int64_t step) const;  // whether profiling.* records this step
  // The allocator's peak of the last step line's window and what it was made of (the step
  // line starts a new window).
  int64_t last_peak_bytes() const { return last_peak_bytes_; }
  const std::vector<TagUsage>& last_peak_usage() const { return last_peak_usage_; }

 private:
  void write_memory_snapshot(int64_t step, const std::string& iteration,
                             const std::string& reason) const;
  void log_step(const StepValues& values);

  const config::JobConfig config_;
  int64_t last_peak_bytes_ = 0;
  std::vector<TagUsage> last_peak_usage_;
  RunInfo run_;
  Allocator& allocator_;
  MaxOverRanks max_over_ranks_;
  GatherOverRanks gather_over_ranks_;
  std::unique_ptr<StepLogger> logger_;               // rank 0
  std::unique_ptr<TensorBoardWriter> tensorboard_;   // metrics.enable_tensorboard
  // The window since the previous step line: when, how many tokens, the wait so far.
  int64_t steps_this_run_ = 0;
  double started_s_ = 0;
  double last_log_s_ = 0;
  int64_t last_log_tokens_ = 0;
  double last_log_comm_wait_s_ = 0;
  int64_t last_log_comm_bytes_ = 0;
  int64_t last_log_step_ = 0;
};

}  // namespace titan::metrics

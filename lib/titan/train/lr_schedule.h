// The learning-rate schedule: torchtitan's warmup-stable-decay LambdaLR factor
// (components/lr_scheduler.py), so that a job file gives
// the same learning rate at every step here as there.
//
//   LrSchedule schedule = LrSchedule::from_config(config);
//   for (int64_t step = 1; step <= config.training.steps; ++step)
//     optimizer.step(schedule.lr(step));          // optimizer.lr * factor(step)
//
// Steps count from 1, as the trainer's `step` does; step s uses torch's lambda at
// last_epoch = s - 1 (LambdaLR evaluates lambda(0) when it is built, and the scheduler
// steps after each optimizer step). With total = lr_scheduler.total_steps or
// training.steps, W = warmup_steps clamped to total, D = decay steps and
// S = total + 1 - W - D stable steps (the +1 is torchtitan's virtual last step, so the
// rate never reaches the floor inside training), for c = s - 1:
//
//   c < W          factor = (c + 1) / W
//   c < W + S      factor = 1
//   otherwise      p = (c + 1 - W - S) / D,  g = 1 - p | 1 - sqrt(p) | (1 + cos(pi p)) / 2
//                  factor = min_lr_factor + (1 - min_lr_factor) * g
//
// D is total - W when decay_ratio is unset, else round(total * decay_ratio) (Python's
// round: halves go to the even neighbour) capped at total - W.
//
// Edge cases, decided here where torchtitan does not reach them:
//   warmup_steps 0   no warmup branch, so no division by zero: step 1 runs at the full
//                    rate (torchtitan behaves the same; its warmup branch is unreachable).
//   D = 0            (warmup_steps >= total, or decay_ratio 0) the rate stays at
//                    optimizer.lr after warmup; torchtitan would assert only past total + 1.
//   steps > total    (lr_scheduler.total_steps shorter than training.steps) p is held at
//                    1, so the rate stays at the floor min_lr_factor * lr; torchtitan's
//                    curve would go on past it (a negative rate for linear decay).
#pragma once

#include <cstdint>

#include "titan/config/job_config.h"

namespace titan::train {

class LrSchedule {
 public:
  // `total_steps` is the schedule's length (lr_scheduler.total_steps or training.steps).
  // Logs a warning when the warmup or the decay has to be shortened, as torchtitan does.
  LrSchedule(const config::LrSchedulerSection& section, int64_t total_steps, double peak_lr);
  static LrSchedule from_config(const config::JobConfig& config);

  // The multiplier of optimizer.lr for 1-based training step `step` (>= 1).
  double factor(int64_t step) const;
  // The learning rate of that step: peak_lr * factor(step).
  double lr(int64_t step) const { return peak_lr_ * factor(step); }

  int64_t total_steps() const { return total_steps_; }
  int64_t warmup_steps() const { return warmup_steps_; }  // after clamping
  int64_t stable_steps() const { return stable_steps_; }  // including the virtual step
  int64_t decay_steps() const { return decay_steps_; }
  double peak_lr() const { return peak_lr_; }

 private:
  int64_t total_steps_;
  int64_t warmup_steps_;
  int64_t stable_steps_;
  int64_t decay_steps_;
  config::DecayType decay_type_;
  double min_lr_factor_;
  double peak_lr_;
};

}  // namespace titan::train

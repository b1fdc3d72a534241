// The warmup-stable-decay factor; lr_schedule.h has the formula and the edge cases.
// Arithmetic is in double in torchtitan's order of operations, so the factors are the
// ones Python computes, bit for bit.
#include "titan/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "titan/core/error.h"
#include "titan/core/logging.h"

namespace titan::train {
namespace {

// Python 3's round() of a float: to the nearest integer, halves to the even neighbour.
// Written out rather than left to std::nearbyint, which follows the rounding mode.
int64_t round_half_to_even(double x) {
  const double below = std::floor(x);
  const double fraction = x - below;  // exact: both are doubles within one unit
  if (fraction > 0.5) return int64_t(below) + 1;
  if (fraction < 0.5) return int64_t(below);
  return std::fmod(below, 2.0) == 0.0 ? int64_t(below) : int64_t(below) + 1;
}

}  // namespace

LrSchedule::LrSchedule(const config::LrSchedulerSection& section, int64_t total_steps,
                       double peak_lr)
    : total_steps_(total_steps),
      decay_type_(section.decay_type),
      min_lr_factor_(section.min_lr_factor),
      peak_lr_(peak_lr) {
  TITAN_CHECK(total_steps >= 1) << "lr schedule: total steps must be >= 1, got " << total_steps;
  TITAN_CHECK(section.warmup_steps >= 0)
      << "lr schedule: warmup_steps must be >= 0, got " << section.warmup_steps;
  warmup_steps_ = section.warmup_steps;
  if (warmup_steps_ > total_steps_) {
    log::warn("lr_scheduler.warmup_steps (%lld) exceeds the %lld schedule steps; warming up "
              "over all %lld",
              (long long)warmup_steps_, (long long)total_steps_, (long long)total_steps_);
    warmup_steps_ = total_steps_;
  }
  if (section.decay_ratio.has_value()) {
    decay_steps_ = round_half_to_even(double(total_steps_) * *section.decay_ratio);
    if (warmup_steps_ + decay_steps_ > total_steps_) {
      log::warn("lr_scheduler: warmup (%lld) + decay (%lld) steps exceed the %lld schedule "
                "steps; decaying over %lld",
                (long long)warmup_steps_, (long long)decay_steps_, (long long)total_steps_,
                (long long)(total_steps_ - warmup_steps_));
      decay_steps_ = total_steps_ - warmup_steps_;
    }
  } else {
    decay_steps_ = total_steps_ - warmup_steps_;
  }
  TITAN_CHECK(decay_steps_ >= 0) << "lr schedule: decay_ratio gives " << decay_steps_ << " steps";
  stable_steps_ = total_steps_ + 1 - warmup_steps_ - decay_steps_;
}

LrSchedule LrSchedule::from_config(const config::JobConfig& config) {
  return LrSchedule(config.lr_scheduler,
                    config.lr_scheduler.total_steps.value_or(config.training.steps),
                    config.optimizer.lr);
}

double LrSchedule::factor(int64_t step) const {
  TITAN_CHECK(step >= 1) << "lr schedule: steps count from 1, got " << step;
  const int64_t c = step - 1;  // torch's last_epoch
  if (c < warmup_steps_) return double(c + 1) / double(warmup_steps_);
  const int64_t warmup_stable_steps = warmup_steps_ + stable_steps_;
  if (c < warmup_stable_steps || decay_steps_ == 0) return 1.0;
  const double progress =
      std::min(1.0, double(c + 1 - warmup_stable_steps) / double(decay_steps_));
  double curve = 0.0;
  switch (decay_type_) {
    case config::DecayType::Linear: curve = 1.0 - progress; break;
    case config::DecayType::Sqrt: curve = 1.0 - std::sqrt(progress); break;
    case config::DecayType::Cosine:
      curve = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
      break;
  }
  return min_lr_factor_ + (1.0 - min_lr_factor_) * curve;
}

}  // namespace titan::train

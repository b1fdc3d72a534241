// The learning-rate schedule against torchtitan's worked examples (its
// components/lr_scheduler.py) and each branch: warmup, stable, linear / sqrt / cosine
// decay, the floor, WSD, and the edge cases lr_schedule.h decides.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "titan/core/error.h"
#include "titan/train/lr_schedule.h"

namespace titan::train {
namespace {

config::LrSchedulerSection section(int64_t warmup_steps, std::optional<double> decay_ratio,
                                   config::DecayType decay_type = config::DecayType::Linear,
                                   double min_lr_factor = 0.0) {
  config::LrSchedulerSection s;
  s.warmup_steps = warmup_steps;
  s.decay_ratio = decay_ratio;
  s.decay_type = decay_type;
  s.min_lr_factor = min_lr_factor;
  return s;
}

std::vector<double> factors(const LrSchedule& schedule, int64_t steps) {
  std::vector<double> out;
  for (int64_t step = 1; step <= steps; ++step) out.push_back(schedule.factor(step));
  return out;
}

TEST(LrSchedule, DebugTomlExampleFromConfig) {
  // llama3 debug TOML: 10 steps, warmup 2, decay_ratio 0.8, linear, lr 8e-4.
  config::JobConfig config;
  config.training.steps = 10;
  config.lr_scheduler.warmup_steps = 2;
  config.lr_scheduler.decay_ratio = 0.8;
  config.optimizer.lr = 8e-4;
  const LrSchedule schedule = LrSchedule::from_config(config);
  EXPECT_EQ(schedule.warmup_steps(), 2);
  EXPECT_EQ(schedule.decay_steps(), 8);
  EXPECT_EQ(schedule.stable_steps(), 1);
  // Every value is exact in binary, and so is the arithmetic that makes it.
  const std::vector<double> expected = {0.5, 1, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125};
  EXPECT_EQ(factors(schedule, 10), expected);
  for (int64_t step = 1; step <= 10; ++step)
    EXPECT_EQ(schedule.lr(step), 8e-4 * expected[size_t(step - 1)]) << "step " << step;
}

TEST(LrSchedule, Llama8BExample) {
  // 8B TOML: 1000 steps, warmup 200, no decay_ratio: s/200 up to 200, 1 at 201, then
  // 1 - (s - 201)/800, which is 1/800 at the last step.
  const LrSchedule schedule(section(200, std::nullopt), 1000, 3e-4);
  for (int64_t s = 1; s <= 200; ++s) EXPECT_EQ(schedule.factor(s), double(s) / 200.0) << s;
  EXPECT_EQ(schedule.factor(201), 1.0);
  for (int64_t s = 202; s <= 1000; ++s)
    EXPECT_EQ(schedule.factor(s), 1.0 - double(s - 201) / 800.0) << s;
  EXPECT_NEAR(schedule.factor(1000), 1.0 / 800.0, 1e-16);
  EXPECT_EQ(schedule.factor(1000), 0.0012499999999999734);  // Python's 1 - 799/800, bit for bit
  EXPECT_EQ(schedule.lr(201), 3e-4);
}

TEST(LrSchedule, TotalStepsKeyOverridesTrainingSteps) {
  config::JobConfig config;
  config.training.steps = 10;
  config.lr_scheduler.total_steps = 20;
  config.lr_scheduler.warmup_steps = 0;
  const LrSchedule schedule = LrSchedule::from_config(config);
  EXPECT_EQ(schedule.total_steps(), 20);
  EXPECT_EQ(schedule.factor(2), 1.0 - 1.0 / 20.0);
}

TEST(LrSchedule, CosineDecayFollowsHalfCosine) {
  // 10 steps, warmup 2: decay over 8 from step 4 on; p = (s - 3) / 8.
  const LrSchedule schedule(section(2, std::nullopt, config::DecayType::Cosine), 10, 1.0);
  EXPECT_EQ(schedule.factor(1), 0.5);
  EXPECT_EQ(schedule.factor(3), 1.0);
  for (int64_t s = 4; s <= 10; ++s) {
    const double p = double(s - 3) / 8.0;
    EXPECT_NEAR(schedule.factor(s), 0.5 * (1.0 + std::cos(std::numbers::pi * p)), 1e-15) << s;
    EXPECT_LT(schedule.factor(s), schedule.factor(s - 1)) << s;
  }
  EXPECT_NEAR(schedule.factor(7), 0.5, 1e-15);  // p = 1/2: half way down
  EXPECT_GT(schedule.factor(10), 0.0);          // the virtual step keeps it above zero
}

TEST(LrSchedule, SqrtDecayIsOneMinusRootOfProgress) {
  const LrSchedule schedule(section(2, std::nullopt, config::DecayType::Sqrt), 10, 1.0);
  EXPECT_EQ(schedule.factor(5), 0.5);   // p = 1/4
  EXPECT_EQ(schedule.factor(4), 1.0 - std::sqrt(0.125));
  EXPECT_EQ(schedule.factor(10), 1.0 - std::sqrt(0.875));
}

TEST(LrSchedule, MinLrFactorIsTheFloor) {
  for (config::DecayType type :
       {config::DecayType::Linear, config::DecayType::Sqrt, config::DecayType::Cosine}) {
    const LrSchedule schedule(section(2, std::nullopt, type, 0.1), 10, 1.0);
    for (int64_t s = 1; s <= 10; ++s) EXPECT_GT(schedule.factor(s), 0.1);
    EXPECT_NEAR(schedule.factor(11), 0.1, 1e-15);  // the virtual step reaches the floor
  }
  const LrSchedule linear(section(2, std::nullopt, config::DecayType::Linear, 0.1), 10, 1.0);
  EXPECT_DOUBLE_EQ(linear.factor(10), 0.1 + 0.9 * 0.125);
  EXPECT_EQ(linear.factor(1), 0.5);  // warmup ignores the floor, as torchtitan's does
}

TEST(LrSchedule, WarmupStableDecay) {
  // decay_ratio 0.3 of 10: warmup 2, stable 6 (5 + the virtual step), decay 3.
  const LrSchedule schedule(section(2, 0.3), 10, 1.0);
  EXPECT_EQ(schedule.decay_steps(), 3);
  EXPECT_EQ(schedule.stable_steps(), 6);
  const std::vector<double> got = factors(schedule, 10);
  const std::vector<double> expected = {0.5, 1, 1, 1, 1, 1, 1, 1, 1.0 - 1.0 / 3.0,
                                        1.0 - 2.0 / 3.0};
  EXPECT_EQ(got, expected);
}

TEST(LrSchedule, DecayRatioRoundsHalfToEvenAsPython) {
  EXPECT_EQ(LrSchedule(section(0, 0.25), 10, 1.0).decay_steps(), 2);  // round(2.5) = 2
  EXPECT_EQ(LrSchedule(section(0, 0.35), 10, 1.0).decay_steps(), 4);  // round(3.5) = 4
}

TEST(LrSchedule, DecayIsCappedAtStepsAfterWarmup) {
  const LrSchedule schedule(section(5, 0.8), 10, 1.0);
  EXPECT_EQ(schedule.decay_steps(), 5);
  EXPECT_EQ(schedule.stable_steps(), 1);
  EXPECT_EQ(schedule.factor(7), 1.0 - 1.0 / 5.0);
}

TEST(LrSchedule, ZeroWarmupStartsAtFullRate) {
  // torchtitan never enters its warmup branch with W = 0: no division by zero, and step 1
  // runs at optimizer.lr.
  const LrSchedule schedule(section(0, std::nullopt), 4, 1.0);
  EXPECT_EQ(factors(schedule, 4), (std::vector<double>{1.0, 0.75, 0.5, 0.25}));
}

TEST(LrSchedule, WarmupLongerThanTotalIsClampedAndNeverDecays) {
  const LrSchedule schedule(section(20, std::nullopt), 10, 1.0);
  EXPECT_EQ(schedule.warmup_steps(), 10);
  EXPECT_EQ(schedule.decay_steps(), 0);
  for (int64_t s = 1; s <= 10; ++s) EXPECT_EQ(schedule.factor(s), double(s) / 10.0);
  EXPECT_EQ(schedule.factor(11), 1.0);
  EXPECT_EQ(schedule.factor(50), 1.0);  // no decay phase: no division by zero past the end
}

TEST(LrSchedule, DecayRatioZeroHoldsThePeak) {
  const LrSchedule schedule(section(2, 0.0), 10, 1.0);
  EXPECT_EQ(factors(schedule, 10), (std::vector<double>{0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
}

TEST(LrSchedule, StepsPastTheScheduleStayAtTheFloor) {
  // lr_scheduler.total_steps shorter than training.steps: held at min_lr_factor instead of
  // running on into negative rates.
  const LrSchedule schedule(section(0, std::nullopt, config::DecayType::Linear, 0.05), 4, 1.0);
  EXPECT_DOUBLE_EQ(schedule.factor(5), 0.05);
  EXPECT_DOUBLE_EQ(schedule.factor(100), 0.05);
}

TEST(LrSchedule, RejectsStepZeroAndEmptySchedules) {
  const LrSchedule schedule(section(2, std::nullopt), 10, 1.0);
  EXPECT_THROW(schedule.factor(0), Error);
  EXPECT_THROW(LrSchedule(section(2, std::nullopt), 0, 1.0), Error);
}

}  // namespace
}  // namespace titan::train

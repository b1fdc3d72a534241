#include <gtest/gtest.h>

#include <thread>

#include "support/gradient_check.h"
#include "titan/core/comm_poll.h"
#include "titan/ops/elementwise.h"

namespace titan::testing {
namespace {

// Odd sizes across the OpenMP split; each result element is one float operation, so the
// checks compare exactly.
const Shape kShape{33, 7};

int polls = 0;
void count_poll() { ++polls; }

// Every op dispatch runs the calling thread's poll of pending communication
// (core/comm_poll.h), and only that thread's.
TEST(OpDispatch, PollsTheCallingThreadsPendingCommunication) {
  Tensor y = Tensor::zeros({8}, DType::F32);
  polls = 0;
  set_comm_poll(count_poll);
  ops::fill(y, 1.0f);
  ops::scale(y, 2.0f);
  EXPECT_EQ(polls, 2);
  std::thread([&] {
    Tensor z = Tensor::zeros({8}, DType::F32);
    ops::fill(z, 1.0f);  // another thread: its own (no) poll
  }).join();
  EXPECT_EQ(polls, 2);
  set_comm_poll(nullptr);
  ops::fill(y, 1.0f);
  EXPECT_EQ(polls, 2);
}

TEST(Elementwise, FillSetsEveryElement) {
  Tensor y = random_tensor(kShape, 1);
  ops::fill(y, 2.5f);
  for (double v : to_values(y)) EXPECT_EQ(v, 2.5);
  ops::fill(y, 0.0f);
  for (double v : to_values(y)) EXPECT_EQ(v, 0.0);
}

TEST(Elementwise, ScaleMultipliesInPlace) {
  Tensor y = random_tensor(kShape, 1);
  const Values before = to_values(y);
  ops::scale(y, 0.375f);
  const Values after = to_values(y);
  for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i], double(float(before[i]) * 0.375f));
}

TEST(Elementwise, AddWritesTheSumAndMayAliasAnInput) {
  const Tensor a = random_tensor(kShape, 1), b = random_tensor(kShape, 2);
  Tensor y = Tensor::empty(kShape, DType::F32);
  ops::add(a, b, y);
  const Values va = to_values(a), vb = to_values(b), vy = to_values(y);
  for (size_t i = 0; i < vy.size(); ++i) EXPECT_EQ(vy[i], double(float(va[i]) + float(vb[i])));
  Tensor a_alias = a;
  ops::add(a_alias, b, a_alias);  // a = a + b in place
  EXPECT_EQ(to_values(a_alias), vy);
}

TEST(Elementwise, AccumulateAndAxpyAddIntoTheOutput) {
  const Tensor x = random_tensor(kShape, 3);
  Tensor y = random_tensor(kShape, 4), z = random_tensor(kShape, 4);
  const Values vx = to_values(x), vy = to_values(y);
  ops::accumulate(x, y);
  ops::axpy(-0.5f, x, z);
  const Values after_y = to_values(y), after_z = to_values(z);
  for (size_t i = 0; i < vx.size(); ++i) {
    EXPECT_EQ(after_y[i], double(float(vy[i]) + float(vx[i])));
    EXPECT_EQ(after_z[i], double(float(vy[i]) + -0.5f * float(vx[i])));
  }
}

TEST(Elementwise, AcceptsOtherShapesOfTheSameCountOnly) {
  const Tensor flat = random_tensor({33 * 7}, 5);
  Tensor y = Tensor::zeros(kShape, DType::F32);
  ops::accumulate(flat, y);
  EXPECT_EQ(to_values(y), to_values(flat));
  const Tensor shorter = random_tensor({33 * 7 - 1}, 5);
  EXPECT_THROW(ops::accumulate(shorter, y), Error);
  EXPECT_THROW(ops::add(shorter, flat, y), Error);
  Tensor ints = Tensor::zeros(kShape, DType::I32);
  EXPECT_THROW(ops::scale(ints, 2.0f), Error);
}

}  // namespace
}  // namespace titan::testing

// The communicator layer without MPI: SelfCommunicator's semantics and counters, argument
// checks, Work handles (wait, done, destructor) and timeouts with a fake operation.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

#include "titan/distributed/communicator.h"

namespace titan::distributed {
namespace {

Tensor iota(int64_t n, float start = 1) {
  Tensor t = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) t.mutable_data<float>()[i] = start + float(i);
  return t;
}

void expect_iota(const Tensor& t, float start = 1) {
  for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data<float>()[i], start + float(i)) << "at " << i;
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

// Restores the process-wide timeout after a test changes it.
class TimeoutGuard {
 public:
  TimeoutGuard() : saved_(comm_timeout()) {}
  ~TimeoutGuard() { set_comm_timeout(saved_); }

 private:
  double saved_;
};

TEST(CollectiveNames, AreTheMethodNames) {
  EXPECT_STREQ(collective_name(Collective::AllReduce), "all_reduce");
  EXPECT_STREQ(collective_name(Collective::ReduceScatter), "reduce_scatter");
  EXPECT_STREQ(collective_name(Collective::AllGather), "all_gather");
  EXPECT_STREQ(collective_name(Collective::Broadcast), "broadcast");
  EXPECT_STREQ(collective_name(Collective::Send), "send");
  EXPECT_STREQ(collective_name(Collective::Recv), "recv");
  EXPECT_STREQ(collective_name(Collective::Barrier), "barrier");
}

TEST(SelfCommunicator, IsRankZeroOfOne) {
  SelfCommunicator world("world");
  EXPECT_EQ(world.rank(), 0);
  EXPECT_EQ(world.size(), 1);
  EXPECT_EQ(world.name(), "world");
  EXPECT_EQ(SelfCommunicator().name(), "self");
}

TEST(SelfCommunicator, CollectivesAreIdentitiesOrCopies) {
  SelfCommunicator comm;
  Tensor data = iota(7);
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) comm.all_reduce(data, op).wait();
  expect_iota(data);
  comm.broadcast(data, 0).wait();
  expect_iota(data);

  Tensor out = Tensor::zeros({7}, DType::F32);
  comm.reduce_scatter(data, out).wait();
  expect_iota(out);
  Tensor gathered = Tensor::zeros({7, 1}, DType::F32);  // only numel matters
  comm.all_gather(iota(7, 10), gathered).wait();
  expect_iota(gathered, 10);

  Tensor empty_in = Tensor::empty({0}, DType::F32), empty_out = Tensor::empty({0}, DType::F32);
  comm.all_gather(empty_in, empty_out).wait();
  comm.reduce_scatter(empty_in, empty_out).wait();
  comm.barrier().wait();
}

TEST(SelfCommunicator, InPlaceGatherAndScatterKeepTheData) {
  SelfCommunicator comm;
  Tensor data = iota(5);
  comm.all_gather(data, data).wait();
  expect_iota(data);
  comm.reduce_scatter(data, data).wait();
  expect_iota(data);
}

TEST(SelfCommunicator, SendAndRecvAreErrors) {
  SelfCommunicator comm("pp");
  Tensor data = iota(3);
  EXPECT_THROW(comm.send(data, 0), Error);
  EXPECT_THROW(comm.recv(data, 0), Error);
  EXPECT_EQ(comm.stats()[Collective::Send].calls, 0);  // nothing started, nothing counted
}

TEST(SelfCommunicator, SplitGivesAOneRankCommunicatorWithTheNewName) {
  SelfCommunicator world("world");
  std::unique_ptr<Communicator> sub = world.split(3, 0, "dp_shard");
  EXPECT_EQ(sub->name(), "dp_shard");
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->rank(), 0);
}

TEST(SelfCommunicator, CountsCallsAndBytesPerCollective) {
  SelfCommunicator comm;
  Tensor a = iota(10);                                  // 40 bytes
  Tensor b = Tensor::zeros({10}, DType::F32);
  Tensor c = Tensor::zeros({3}, DType::I64);            // 24 bytes
  comm.all_reduce(a).wait();
  comm.all_reduce(c, ReduceOp::Max).wait();
  comm.reduce_scatter(a, b).wait();
  comm.all_gather(a, b).wait();
  comm.all_gather(a, b).wait();
  comm.broadcast(c, 0).wait();
  comm.barrier().wait();
  const CommStats& s = comm.stats();
  EXPECT_EQ(s[Collective::AllReduce].calls, 2);
  EXPECT_EQ(s[Collective::AllReduce].bytes, 64);
  EXPECT_EQ(s[Collective::ReduceScatter].calls, 1);
  EXPECT_EQ(s[Collective::ReduceScatter].bytes, 40);
  EXPECT_EQ(s[Collective::AllGather].calls, 2);
  EXPECT_EQ(s[Collective::AllGather].bytes, 80);
  EXPECT_EQ(s[Collective::Broadcast].calls, 1);
  EXPECT_EQ(s[Collective::Broadcast].bytes, 24);
  EXPECT_EQ(s[Collective::Barrier].calls, 1);
  EXPECT_EQ(s[Collective::Barrier].bytes, 0);
  comm.reset_stats();
  EXPECT_EQ(comm.stats()[Collective::AllReduce].calls, 0);
  EXPECT_EQ(comm.stats().wait_seconds, 0);
}

TEST(CommunicatorChecks, RejectWrongSizesDtypesAndRanks) {
  SelfCommunicator comm("dp_shard");
  Tensor f = iota(4);
  Tensor small = Tensor::zeros({3}, DType::F32);
  Tensor bytes = Tensor::zeros({4}, DType::U8);
  Tensor fp8 = Tensor::zeros({4}, DType::F8E4M3);
  Tensor i32 = Tensor::zeros({4}, DType::I32);
  Tensor undefined;
  EXPECT_THROW(comm.all_reduce(bytes), Error);
  EXPECT_THROW(comm.all_reduce(fp8), Error);
  EXPECT_THROW(comm.all_reduce(undefined), Error);
  comm.all_reduce(i32).wait();  // f32, bf16, f16, i32 and i64 reduce (where the backend can)
  EXPECT_THROW(comm.reduce_scatter(f, small), Error);
  EXPECT_THROW(comm.reduce_scatter(bytes, bytes), Error);   // reductions only
  EXPECT_THROW(comm.all_gather(f, small), Error);
  EXPECT_THROW(comm.all_gather(f, i32), Error);             // dtype mismatch
  EXPECT_THROW(comm.broadcast(f, 1), Error);
  EXPECT_THROW(comm.broadcast(f, -1), Error);
  EXPECT_THROW(comm.send(f, 1), Error);
  EXPECT_THROW(comm.recv(f, 0, -1), Error);
  comm.all_gather(bytes, bytes).wait();                     // moving any dtype is fine
  try {
    comm.reduce_scatter(f, small);
    FAIL() << "no throw";
  } catch (const Error& e) {
    expect_contains(e.what(), "reduce_scatter on dp_shard");
    expect_contains(e.what(), "input has 4 elements");
  }
  EXPECT_EQ(comm.stats()[Collective::ReduceScatter].calls, 0);
}

TEST(ScalarAllReduce, OneRankGivesTheValueBack) {
  SelfCommunicator comm;
  EXPECT_EQ(all_reduce_scalar(comm, 2.5), 2.5);
  EXPECT_EQ(all_reduce_scalar(comm, 0.1, ReduceOp::Max), 0.1);
  EXPECT_EQ(all_reduce_scalar(comm, int64_t{1} << 40), int64_t{1} << 40);
  EXPECT_EQ(all_reduce_scalar(comm, int64_t{-3}, ReduceOp::Min), -3);
  // The double form goes through an all_gather (there is no F64 dtype), the integer one not.
  EXPECT_EQ(comm.stats()[Collective::AllGather].calls, 2);
  EXPECT_EQ(comm.stats()[Collective::AllReduce].calls, 2);
}

// ---- Work handles with a fake operation ----------------------------------------------------

// Completes after `tests_needed` calls to test() (never when negative, until released).
struct FakeState {
  std::atomic<int> tests{0};
  std::atomic<int> finishes{0};
  std::atomic<int> tests_needed{0};
};

class FakeOperation final : public PendingOperation {
 public:
  explicit FakeOperation(std::shared_ptr<FakeState> state) : state_(std::move(state)) {}
  bool test() override {
    const int needed = state_->tests_needed.load();
    return ++state_->tests >= needed && needed >= 0;
  }
  void finish() override { ++state_->finishes; }

 private:
  std::shared_ptr<FakeState> state_;
};

std::shared_ptr<FakeState> fake_state(int tests_needed) {
  auto state = std::make_shared<FakeState>();
  state->tests_needed = tests_needed;
  return state;
}

// A two-rank communicator whose operations are all fake.
class FakeCommunicator final : public Communicator {
 public:
  FakeCommunicator(std::string name, std::shared_ptr<FakeState> state)
      : Communicator(0, 2, std::move(name)), state_(std::move(state)) {}
  std::unique_ptr<Communicator> split(int, int, std::string) override { return nullptr; }

 protected:
  std::unique_ptr<PendingOperation> start_all_reduce(Tensor&, ReduceOp) override { return op(); }
  std::unique_ptr<PendingOperation> start_reduce_scatter(const Tensor&, Tensor&) override { return op(); }
  std::unique_ptr<PendingOperation> start_all_gather(const Tensor&, Tensor&) override { return op(); }
  std::unique_ptr<PendingOperation> start_broadcast(Tensor&, int) override { return op(); }
  std::unique_ptr<PendingOperation> start_send(const Tensor&, int, int) override { return op(); }
  std::unique_ptr<PendingOperation> start_recv(Tensor&, int, int) override { return op(); }
  std::unique_ptr<PendingOperation> start_all_to_all(const Tensor&, const std::vector<int64_t>&,
                                                     Tensor&,
                                                     const std::vector<int64_t>&) override {
    return op();
  }
  std::unique_ptr<PendingOperation> start_barrier() override { return op(); }

 private:
  std::unique_ptr<PendingOperation> op() { return std::make_unique<FakeOperation>(state_); }
  std::shared_ptr<FakeState> state_;
};

TEST(Work, DefaultAndMovedFromHandlesAreComplete) {
  Work empty;
  EXPECT_FALSE(empty.pending());
  EXPECT_TRUE(empty.done());
  empty.wait();
  auto state = fake_state(3);
  Work work(std::make_unique<FakeOperation>(state), "test", nullptr);
  Work moved = std::move(work);
  EXPECT_FALSE(work.pending());  // NOLINT(bugprone-use-after-move): the contract under test
  EXPECT_TRUE(moved.pending());
  moved.wait();
  EXPECT_EQ(state->finishes, 1);
}

TEST(Work, WaitPollsUntilCompleteThenFinishesOnce) {
  auto state = fake_state(500);  // past the yields, into the sleeps
  FakeCommunicator comm("dp_shard", state);
  Tensor x = iota(4);
  Work work = comm.all_reduce(x);
  EXPECT_TRUE(work.pending());
  work.wait();
  EXPECT_FALSE(work.pending());
  EXPECT_EQ(state->tests, 500);
  EXPECT_EQ(state->finishes, 1);
  work.wait();  // a second wait returns at once
  EXPECT_EQ(state->finishes, 1);
  EXPECT_GT(comm.stats().wait_seconds, 0);
}

TEST(Work, DoneIsNonBlockingAndFinishesWhenComplete) {
  auto state = fake_state(3);
  Work work(std::make_unique<FakeOperation>(state), "test", nullptr);
  EXPECT_FALSE(work.done());
  EXPECT_FALSE(work.done());
  EXPECT_EQ(state->finishes, 0);
  EXPECT_TRUE(work.done());
  EXPECT_EQ(state->finishes, 1);
  EXPECT_FALSE(work.pending());
}

TEST(Work, DestructorWaitsForAnUnwaitedOperation) {
  auto state = fake_state(5);
  { Work work(std::make_unique<FakeOperation>(state), "test", nullptr); }
  EXPECT_EQ(state->tests, 5);
  EXPECT_EQ(state->finishes, 1);
}

TEST(Work, AssigningOverAPendingHandleWaitsForIt) {
  auto first = fake_state(4);
  auto second = fake_state(1);
  Work work(std::make_unique<FakeOperation>(first), "first", nullptr);
  work = Work(std::make_unique<FakeOperation>(second), "second", nullptr);
  EXPECT_EQ(first->finishes, 1);
  work.wait();
  EXPECT_EQ(second->finishes, 1);
}

TEST(Work, TimeoutThrowsErrorNamingTheCollectiveTheGroupAndTheSetting) {
  TimeoutGuard guard;
  set_comm_timeout(0.2, "comm.train_timeout_seconds");
  auto state = fake_state(-1);
  FakeCommunicator comm("dp_shard", state);
  Tensor shard = Tensor::zeros({1 << 19}, DType::F32);  // 2 MiB in, 4 MiB out
  Tensor full = Tensor::zeros({1 << 20}, DType::F32);
  const int64_t abandoned_before = abandoned_operation_count();
  Work work = comm.all_gather(shard, full);
  const auto start = std::chrono::steady_clock::now();
  try {
    work.wait();
    FAIL() << "no throw";
  } catch (const InputError& e) {
    FAIL() << "a timeout is not bad input: " << e.what();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "all_gather of 4.0 MiB on dp_shard (2 ranks) did not complete within 0.2 s: a "
                 "rank stopped answering (comm.train_timeout_seconds)");
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(waited, 0.2);
  EXPECT_LT(waited, 5.0);
  EXPECT_GE(comm.stats().wait_seconds, 0.2);
  // The operation is abandoned, not freed: the handle is complete, the list holds it.
  EXPECT_FALSE(work.pending());
  EXPECT_EQ(abandoned_operation_count(), abandoned_before + 1);
  EXPECT_FALSE(complete_abandoned_operations(0.05));
  state->tests_needed = 0;  // the late peer arrives
  EXPECT_TRUE(complete_abandoned_operations(1.0));
  EXPECT_EQ(abandoned_operation_count(), 0);
  EXPECT_EQ(state->finishes, 1);
}

TEST(Work, TimeoutMessagesNamePeersOfPointToPoint) {
  TimeoutGuard guard;
  set_comm_timeout(0.05);
  auto state = fake_state(-1);
  FakeCommunicator comm("pp", state);
  Tensor x = Tensor::zeros({256}, DType::F32);
  try {
    comm.recv(x, 1, 7).wait();
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "recv of 1.0 KiB from rank 1 on pp (2 ranks) did not complete within "
                           "0.05 s: a rank stopped answering");
  }
  try {
    comm.barrier().wait();
    FAIL() << "no throw";
  } catch (const Error& e) {
    expect_contains(e.what(), "barrier on pp (2 ranks) did not complete");
  }
  state->tests_needed = 0;
  EXPECT_TRUE(complete_abandoned_operations(1.0));
}

TEST(Work, DestructorDuringAnExceptionAbandonsInsteadOfWaiting) {
  TimeoutGuard guard;
  set_comm_timeout(30);
  auto state = fake_state(-1);
  const int64_t abandoned_before = abandoned_operation_count();
  const auto start = std::chrono::steady_clock::now();
  try {
    Work work(std::make_unique<FakeOperation>(state), "test", nullptr);
    throw std::runtime_error("a failure elsewhere");
  } catch (const std::runtime_error&) {
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  EXPECT_EQ(abandoned_operation_count(), abandoned_before + 1);
  state->tests_needed = 0;
  EXPECT_TRUE(complete_abandoned_operations(1.0));
}

TEST(WorkDeathTest, DestructorAbortsWhenItsWaitTimesOut) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        set_comm_timeout(0.05);
        auto state = fake_state(-1);
        FakeCommunicator comm("dp", state);
        Tensor x = Tensor::zeros({4}, DType::F32);
        Work work = comm.all_reduce(x);
      },
      "all_reduce of 16 B on dp \\(2 ranks\\) did not complete within 0.05 s");
}

TEST(CommTimeout, DefaultsToFiveMinutesAndRejectsNonPositive) {
  EXPECT_EQ(comm_timeout(), 300);
  EXPECT_THROW(set_comm_timeout(0), Error);
  EXPECT_THROW(set_comm_timeout(-1), Error);
}

}  // namespace
}  // namespace titan::distributed

// Every collective of the world communicator against a serial computation, with inputs
// whose sums are exact in any order (docs/design.md, "Tests"), at the sizes FSDP meets:
// empty shards, one element, odd sizes and a few MiB. Run at np 2, 3 and 4.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "distributed_test_main.h"
#include "distributed_test_util.h"
#include "titan/core/comm_poll.h"
#include "titan/core/float_formats.h"
#include "titan/distributed/mpi/mpi_communicator.h"
#include "titan/ops/elementwise.h"

namespace titan::distributed {
namespace {

using testing_util::fill_pattern;
using testing_util::first_pattern_mismatch;
using testing_util::group_members;
using testing_util::small_value;

constexpr int64_t kSizes[] = {0, 1, 1001, 786432};  // 786432 f32 = 3 MiB

template <class T>
Tensor small_values(int64_t n, int rank) {
  Tensor t = Tensor::empty({n}, dtype_of<T>());
  for (int64_t i = 0; i < n; ++i) t.mutable_data<T>()[i] = T(small_value(rank, i));
  return t;
}

// Compares every element with expected(i); reports the count and the first mismatch.
template <class T, class Expected>
void expect_values(const Tensor& t, Expected expected) {
  int64_t mismatches = 0, first = -1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (t.data<T>()[i] != T(expected(i))) {
      if (first < 0) first = i;
      ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << t.numel() << "; first at " << first << ": got "
                           << (first >= 0 ? double(t.data<T>()[first]) : 0.0) << ", expected "
                           << (first >= 0 ? double(T(expected(first))) : 0.0);
}

template <class T>
void check_all_reduce(Communicator& world, int64_t n) {
  const int size = world.size();
  const int64_t rank_sum = int64_t(size) * (size + 1) / 2;  // of (rank + 1)
  Tensor sum = small_values<T>(n, world.rank());
  world.all_reduce(sum, ReduceOp::Sum).wait();
  expect_values<T>(sum, [&](int64_t i) { return rank_sum * (i % 13 + 1); });
  Tensor max = small_values<T>(n, world.rank());
  world.all_reduce(max, ReduceOp::Max).wait();
  expect_values<T>(max, [&](int64_t i) { return small_value(size - 1, i); });
  Tensor min = small_values<T>(n, world.rank());
  world.all_reduce(min, ReduceOp::Min).wait();
  expect_values<T>(min, [&](int64_t i) { return small_value(0, i); });
}

template <class T>
void check_reduce_scatter(Communicator& world, int64_t n) {
  const int size = world.size();
  const int64_t rank_sum = int64_t(size) * (size + 1) / 2;
  const Tensor input = small_values<T>(n * size, world.rank());
  Tensor output = Tensor::empty({n}, dtype_of<T>());
  world.reduce_scatter(input, output).wait();
  const int64_t slot = world.rank() * n;
  expect_values<T>(output, [&](int64_t i) { return rank_sum * ((slot + i) % 13 + 1); });
}

void check_all_gather(Communicator& world, const Tensor& input, const Tensor& output) {
  const int64_t slot_bytes = input.bytes();
  const auto* bytes = static_cast<const uint8_t*>(output.raw_data());
  for (int rank = 0; rank < world.size(); ++rank) {
    EXPECT_EQ(first_pattern_mismatch(bytes + rank * slot_bytes, slot_bytes, rank), -1)
        << "slot of rank " << rank << ", " << dtype_name(input.dtype()) << " x " << input.numel();
  }
}

TEST(Collectives, AllReduceSumMaxMinMatchSerial) {
  Communicator& world = test_world();
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(n));
    check_all_reduce<float>(world, n);
    check_all_reduce<int32_t>(world, n);
    check_all_reduce<int64_t>(world, n);
  }
}

TEST(Collectives, ReduceScatterSumsEachRanksSlot) {
  Communicator& world = test_world();
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1001}, int64_t{786432} / world.size()}) {
    SCOPED_TRACE("n per rank = " + std::to_string(n));
    check_reduce_scatter<float>(world, n);
    check_reduce_scatter<int64_t>(world, n);
  }
}

TEST(Collectives, AllGatherConcatenatesInRankOrderForEveryDtypeWidth) {
  Communicator& world = test_world();
  for (DType dtype : {DType::F32, DType::BF16, DType::I64, DType::U8}) {
    for (int64_t n : kSizes) {
      Tensor input = Tensor::empty({n}, dtype);
      fill_pattern(input, world.rank());
      Tensor output = Tensor::zeros({n * world.size()}, dtype);
      world.all_gather(input, output).wait();
      check_all_gather(world, input, output);
    }
  }
}

// A started collective installs the thread's poll of pending communication, which every op
// dispatch runs (core/comm_poll.h: MPI advances it only inside MPI calls); the poll goes
// with the last pending operation, and the result is the same.
TEST(Collectives, PendingCollectivesArePolledBetweenOps) {
  Communicator& world = test_world();
  EXPECT_EQ(installed_comm_poll(), nullptr);
  Tensor input = Tensor::empty({int64_t(1) << 18}, DType::F32);
  fill_pattern(input, world.rank());
  Tensor output = Tensor::zeros({input.numel() * world.size()}, DType::F32);
  Work gather = world.all_gather(input, output);
  EXPECT_NE(installed_comm_poll(), nullptr);
  Tensor scratch = Tensor::zeros({16}, DType::F32);
  for (int i = 0; i < 100; ++i) ops::fill(scratch, 1.0f);  // each one polls the gather
  gather.wait();
  gather = Work();
  check_all_gather(world, input, output);
  EXPECT_EQ(installed_comm_poll(), nullptr);
}

TEST(Collectives, InPlaceAllGatherAndReduceScatterUseTheRanksSlot) {
  Communicator& world = test_world();
  const int size = world.size();
  for (int64_t n : {int64_t{1}, int64_t{1001}}) {
    // all_gather: the input is this rank's slot of the output.
    Tensor gathered = Tensor::zeros({n * size}, DType::F32);
    Tensor slot = gathered.narrow(world.rank() * n, n);
    fill_pattern(slot, world.rank());
    world.all_gather(slot, gathered).wait();
    Tensor reference = Tensor::empty({n}, DType::F32);
    check_all_gather(world, reference, gathered);
    // reduce_scatter: the output is this rank's slot of the input.
    Tensor input = small_values<float>(n * size, world.rank());
    Tensor output = input.narrow(world.rank() * n, n);
    world.reduce_scatter(input, output).wait();
    const int64_t rank_sum = int64_t(size) * (size + 1) / 2;
    const int64_t first = world.rank() * n;
    expect_values<float>(output, [&](int64_t i) { return rank_sum * ((first + i) % 13 + 1); });
  }
}

TEST(Collectives, BroadcastFromEveryRoot) {
  Communicator& world = test_world();
  for (int root = 0; root < world.size(); ++root) {
    for (int64_t n : kSizes) {
      Tensor data = Tensor::zeros({n}, DType::F32);
      if (world.rank() == root) fill_pattern(data, root);
      world.broadcast(data, root).wait();
      EXPECT_EQ(first_pattern_mismatch(static_cast<const uint8_t*>(data.raw_data()), data.bytes(), root), -1)
          << "root " << root << ", n " << n;
    }
  }
}

TEST(Collectives, SendAndRecvAroundARing) {
  Communicator& world = test_world();
  if (world.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const int next = (world.rank() + 1) % world.size();
  const int previous = (world.rank() + world.size() - 1) % world.size();
  int tag = 0;
  for (int64_t n : kSizes) {
    Tensor outgoing = Tensor::empty({n}, DType::F32);
    fill_pattern(outgoing, world.rank());
    Tensor incoming = Tensor::zeros({n}, DType::F32);
    Work receive = world.recv(incoming, previous, tag);
    Work send = world.send(outgoing, next, tag);
    send.wait();
    receive.wait();
    EXPECT_EQ(first_pattern_mismatch(static_cast<const uint8_t*>(incoming.raw_data()),
                                     incoming.bytes(), previous), -1)
        << "n " << n;
    ++tag;
  }
}

// Rank s sends rank r a chunk of (s + 2 r) % 4 elements (some empty) whose values name
// both; each rank receives its chunks in rank order. Counted as one all_to_all of the input.
TEST(Collectives, AllToAllMovesEachRanksChunkToItsPeer) {
  Communicator& world = test_world();
  const int size = world.size(), me = world.rank();
  const auto count = [](int from, int to) { return int64_t((from + 2 * to) % 4); };
  std::vector<int64_t> send(static_cast<size_t>(size)), recv(static_cast<size_t>(size));
  int64_t sent = 0, received = 0;
  for (int r = 0; r < size; ++r) {
    sent += send[size_t(r)] = count(me, r);
    received += recv[size_t(r)] = count(r, me);
  }
  Tensor input = Tensor::empty({sent}, DType::I64);
  int64_t* in = input.mutable_data<int64_t>();
  for (int r = 0, at = 0; r < size; ++r) {
    for (int64_t i = 0; i < count(me, r); ++i) in[at++] = 1000 * me + 10 * r + i;
  }
  Tensor output = Tensor::empty({received}, DType::I64);
  const int64_t calls = world.stats()[Collective::AllToAll].calls;
  world.all_to_all(input, send, output, recv).wait();
  EXPECT_EQ(world.stats()[Collective::AllToAll].calls, calls + 1);
  const int64_t* out = output.data<int64_t>();
  for (int r = 0, at = 0; r < size; ++r) {
    for (int64_t i = 0; i < count(r, me); ++i, ++at) {
      EXPECT_EQ(out[at], 1000 * r + 10 * me + i) << "from rank " << r << ", element " << i;
    }
  }
  // Counts that do not add up to the buffers are refused before anything moves.
  std::vector<int64_t> wrong = send;
  wrong[0] += 1;
  EXPECT_THROW(world.all_to_all(input, wrong, output, recv), Error);
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

TEST(Collectives, NoRankLeavesABarrierBeforeEveryRankEnteredIt) {
  Communicator& world = test_world();
  std::this_thread::sleep_for(std::chrono::milliseconds(30 * world.rank()));
  Tensor entered = Tensor::empty({1}, DType::I64);
  entered.mutable_data<int64_t>()[0] = now_ns();  // steady_clock is one clock per host
  world.barrier().wait();
  const int64_t left = now_ns();
  Tensor all_entered = Tensor::empty({world.size()}, DType::I64);
  world.all_gather(entered, all_entered).wait();
  if (test_runtime().topology().node_count > 1) GTEST_SKIP() << "clocks differ across hosts";
  for (int rank = 0; rank < world.size(); ++rank) {
    EXPECT_GE(left, all_entered.data<int64_t>()[rank]) << "rank " << rank << " entered later";
  }
}

TEST(Collectives, TwoOperationsInFlightWaitedInReverseOrder) {
  Communicator& world = test_world();
  const int size = world.size();
  Tensor summed = small_values<float>(1001, world.rank());
  Tensor input = Tensor::empty({513}, DType::I64);
  fill_pattern(input, world.rank());
  Tensor gathered = Tensor::zeros({513 * size}, DType::I64);
  Work reduce = world.all_reduce(summed);
  Work gather = world.all_gather(input, gathered);
  if (world.size() > 1) {
    EXPECT_TRUE(reduce.pending());  // one rank completes at the call
  }
  gather.wait();
  reduce.wait();
  check_all_gather(world, input, gathered);
  const int64_t rank_sum = int64_t(size) * (size + 1) / 2;
  expect_values<float>(summed, [&](int64_t i) { return rank_sum * (i % 13 + 1); });
  // done() polls without blocking and then finishes the operation.
  Work barrier = world.barrier();
  while (!barrier.done()) std::this_thread::yield();
  EXPECT_FALSE(barrier.pending());
}

TEST(Collectives, CountCallsAndBytesPerCollective) {
  Communicator& world = test_world();
  const int size = world.size();
  std::unique_ptr<Communicator> comm = world.split(0, world.rank(), "counted");
  Tensor f = small_values<float>(100, world.rank());      // 400 bytes
  Tensor l = small_values<int64_t>(10, world.rank());     // 80 bytes
  Tensor scattered = Tensor::empty({100}, DType::F32);
  Tensor to_scatter = small_values<float>(100 * size, world.rank());
  Tensor gathered = Tensor::empty({100 * size}, DType::F32);
  comm->all_reduce(f).wait();
  comm->all_reduce(l, ReduceOp::Max).wait();
  comm->reduce_scatter(to_scatter, scattered).wait();
  comm->all_gather(f, gathered).wait();
  comm->broadcast(l, 0).wait();
  comm->barrier().wait();
  if (size >= 2) {
    const int next = (comm->rank() + 1) % size, previous = (comm->rank() + size - 1) % size;
    Work receive = comm->recv(scattered, previous);
    comm->send(f, next).wait();
    receive.wait();
  }
  const CommStats& s = comm->stats();
  EXPECT_EQ(s[Collective::AllReduce].calls, 2);
  EXPECT_EQ(s[Collective::AllReduce].bytes, 480);
  EXPECT_EQ(s[Collective::ReduceScatter].calls, 1);
  EXPECT_EQ(s[Collective::ReduceScatter].bytes, 400 * size);  // the input
  EXPECT_EQ(s[Collective::AllGather].calls, 1);
  EXPECT_EQ(s[Collective::AllGather].bytes, 400 * size);      // the output
  EXPECT_EQ(s[Collective::Broadcast].calls, 1);
  EXPECT_EQ(s[Collective::Broadcast].bytes, 80);
  EXPECT_EQ(s[Collective::Barrier].calls, 1);
  EXPECT_EQ(s[Collective::Barrier].bytes, 0);
  EXPECT_EQ(s[Collective::Send].calls, size >= 2 ? 1 : 0);
  EXPECT_EQ(s[Collective::Send].bytes, size >= 2 ? 400 : 0);
  EXPECT_EQ(s[Collective::Recv].calls, size >= 2 ? 1 : 0);
  EXPECT_EQ(s[Collective::Recv].bytes, size >= 2 ? 400 : 0);
  EXPECT_GE(s.wait_seconds, 0);
  comm->reset_stats();
  EXPECT_EQ(comm->stats()[Collective::AllReduce].calls, 0);
}

TEST(Collectives, SplitGroupsByColorAndOrdersByKey) {
  Communicator& world = test_world();
  const int rank = world.rank(), size = world.size();
  // Even and odd ranks, each group in descending world order.
  std::unique_ptr<Communicator> parity = world.split(rank % 2, -rank, "parity");
  EXPECT_EQ(parity->name(), "parity");
  std::vector<int64_t> expected;
  for (int r = size - 1; r >= 0; --r) {
    if (r % 2 == rank % 2) expected.push_back(r);
  }
  EXPECT_EQ(parity->size(), int(expected.size()));
  EXPECT_EQ(group_members(*parity, rank), expected);
  EXPECT_EQ(expected[size_t(parity->rank())], rank);
  // A group reduces over its own members only.
  Tensor x = Tensor::empty({1}, DType::I64);
  x.mutable_data<int64_t>()[0] = rank;
  parity->all_reduce(x).wait();
  int64_t sum = 0;
  for (int64_t r : expected) sum += r;
  EXPECT_EQ(x.data<int64_t>()[0], sum);
}

// Buffers of more elements than one MPI call takes (INT_MAX) go as several calls. A small
// limit on a private communicator sends small tensors down those paths.
TEST(Collectives, BuffersLargerThanOneCallAreSplitIntoSeveralCalls) {
  Communicator& world = test_world();
  std::unique_ptr<Communicator> comm = world.split(0, world.rank(), "pieces");
  auto* mpi = dynamic_cast<MpiCommunicator*>(comm.get());
  if (mpi == nullptr) GTEST_SKIP() << "not an MPI world";
  mpi->set_max_count_per_call(1000);
  const int size = comm->size();
  for (int64_t n : {int64_t{999}, int64_t{1000}, int64_t{2501}}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    check_all_reduce<float>(*comm, n);
    check_all_reduce<int64_t>(*comm, n);
    check_reduce_scatter<float>(*comm, n);
    check_reduce_scatter<int64_t>(*comm, n);
    Tensor input = Tensor::empty({n}, DType::BF16);
    fill_pattern(input, comm->rank());
    Tensor output = Tensor::zeros({n * size}, DType::BF16);
    comm->all_gather(input, output).wait();
    check_all_gather(*comm, input, output);
    Tensor gathered = Tensor::zeros({n * size}, DType::F32);  // in place
    Tensor slot = gathered.narrow(comm->rank() * n, n);
    fill_pattern(slot, comm->rank());
    comm->all_gather(slot, gathered).wait();
    check_all_gather(*comm, slot, gathered);
    Tensor data = Tensor::zeros({n}, DType::I64);
    if (comm->rank() == size - 1) fill_pattern(data, size - 1);
    comm->broadcast(data, size - 1).wait();
    EXPECT_EQ(first_pattern_mismatch(static_cast<const uint8_t*>(data.raw_data()), data.bytes(), size - 1), -1);
    if (size >= 2) {
      Tensor outgoing = Tensor::empty({n}, DType::F32);
      fill_pattern(outgoing, comm->rank());
      Tensor incoming = Tensor::zeros({n}, DType::F32);
      const int previous = (comm->rank() + size - 1) % size;
      Work receive = comm->recv(incoming, previous, 5);
      comm->send(outgoing, (comm->rank() + 1) % size, 5).wait();
      receive.wait();
      EXPECT_EQ(first_pattern_mismatch(static_cast<const uint8_t*>(incoming.raw_data()),
                                       incoming.bytes(), previous), -1);
    }
  }
  // Still one call and the whole size in the counters, however many MPI calls it took.
  EXPECT_EQ(comm->stats()[Collective::Broadcast].calls, 3);
  EXPECT_EQ(comm->stats()[Collective::Broadcast].bytes, 8 * (999 + 1000 + 2501));
}

TEST(Collectives, ScalarHelpersAgreeOnEveryRank) {
  Communicator& world = test_world();
  const int rank = world.rank(), size = world.size();
  EXPECT_EQ(all_reduce_scalar(world, rank + 0.25), size * 0.25 + size * (size - 1) / 2.0);
  EXPECT_EQ(all_reduce_scalar(world, rank + 0.25, ReduceOp::Max), size - 0.75);
  EXPECT_EQ(all_reduce_scalar(world, rank + 0.25, ReduceOp::Min), 0.25);
  EXPECT_EQ(all_reduce_scalar(world, (int64_t{1} << 40) * rank),
            (int64_t{1} << 40) * size * (size - 1) / 2);
  EXPECT_EQ(all_reduce_scalar(world, int64_t{rank} - 7, ReduceOp::Min), -7);
}

// bf16 (mixed precision's activations) reduces as NCCL reduces it: each combination in f32,
// rounded to bf16. Values exact in bf16 sum exactly; max and min pick.
TEST(Collectives, Bf16ReducesLikeF32RoundedEachStep) {
  Communicator& world = test_world();
  const int rank = world.rank(), size = world.size();
  Tensor x = Tensor::empty({5}, DType::BF16);
  for (int i = 0; i < 5; ++i) x.mutable_data<bf16_t>()[i] = bf16_from_f32(float(rank + i) * 0.5f);
  Tensor sum = x, max = Tensor::empty({5}, DType::BF16), out = Tensor::empty({1}, DType::BF16);
  std::memcpy(max.raw_mutable_data(), x.raw_data(), size_t(x.bytes()));
  world.all_reduce(sum).wait();
  world.all_reduce(max, ReduceOp::Max).wait();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(f32_from_bf16(sum.data<bf16_t>()[i]), 0.5f * float(size * i + size * (size - 1) / 2));
    EXPECT_EQ(f32_from_bf16(max.data<bf16_t>()[i]), 0.5f * float(size - 1 + i));
  }
  Tensor stacked = Tensor::empty({size}, DType::BF16);
  for (int r = 0; r < size; ++r) stacked.mutable_data<bf16_t>()[r] = bf16_from_f32(float(r + rank));
  world.reduce_scatter(stacked, out).wait();
  EXPECT_EQ(f32_from_bf16(out.data<bf16_t>()[0]), float(size * rank + size * (size - 1) / 2));
}

TEST(Collectives, BadArgumentsThrowOnEveryRankBeforeAnythingMoves) {
  Communicator& world = test_world();
  const int size = world.size();
  Tensor f = Tensor::zeros({8}, DType::F32);
  Tensor wrong = Tensor::zeros({8 * size + 1}, DType::F32);
  Tensor bytes = Tensor::zeros({8}, DType::U8);
  Tensor half = Tensor::zeros({8}, DType::F16);
  EXPECT_THROW(world.all_reduce(bytes), Error);
  if (dynamic_cast<MpiCommunicator*>(&world) != nullptr) {
    EXPECT_THROW(world.all_reduce(half), Error);  // f16: no MPI type and no op of ours
  }
  EXPECT_THROW(world.reduce_scatter(wrong, f), Error);
  EXPECT_THROW(world.all_gather(f, wrong), Error);
  EXPECT_THROW(world.broadcast(f, size), Error);
  EXPECT_THROW(world.send(f, size), Error);
  EXPECT_THROW(world.recv(f, -1), Error);
  EXPECT_THROW(world.split(-1, 0, "bad"), Error);
  world.barrier().wait();  // and the world still works
}

// A rank that stops answering makes the others fail, and the operation they gave up on stays
// valid: when the late rank does arrive, it completes into memory that is still there.
TEST(Collectives, WaitTimesOutWhileAPeerSleepsAndCompletesWhenItArrives) {
  Communicator& world = test_world();
  if (world.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const int size = world.size();
  Tensor x = small_values<float>(1001, world.rank());
  world.barrier().wait();
  if (world.rank() == 0) {
    const double usual_timeout = comm_timeout();
    set_comm_timeout(0.5);
    try {
      world.all_reduce(x).wait();
      ADD_FAILURE() << "the all_reduce completed while the other ranks slept";
    } catch (const Error& e) {
      const std::string expected = "all_reduce of 3.9 KiB on world (" + std::to_string(size) +
                                   " ranks) did not complete within 0.5 s: a rank stopped answering";
      EXPECT_EQ(std::string(e.what()), expected);
    }
    set_comm_timeout(usual_timeout, "distributed_mpi_tests");
    EXPECT_EQ(abandoned_operation_count(), 1);
  } else {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    world.all_reduce(x).wait();
  }
  world.barrier().wait();
  EXPECT_TRUE(complete_abandoned_operations(60));
  EXPECT_EQ(abandoned_operation_count(), 0);
  const int64_t rank_sum = int64_t(size) * (size + 1) / 2;
  expect_values<float>(x, [&](int64_t i) { return rank_sum * (i % 13 + 1); });
}

}  // namespace
}  // namespace titan::distributed

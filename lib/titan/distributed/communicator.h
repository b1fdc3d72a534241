// Communicator: the only way tensors move between ranks (docs/design.md, "Parallelism").
//
//   Communicator& group = mesh.dp_shard();
//   Work gather = group.all_gather(shard, full);   // starts it
//   ... compute ...
//   gather.wait();                                 // blocks, at most comm_timeout() seconds
//
// Every call is asynchronous and returns a Work handle; `.wait()` right away makes it
// blocking. Implementations: SelfCommunicator (one rank: copies), MpiCommunicator (host
// tensors, distributed/mpi/), NcclCommunicator (device tensors, distributed/nccl/),
// FakeCommunicator (dry runs: a world that is not there). Parallel code never calls MPI or
// NCCL itself.
//
// Buffers are flat: only numel and dtype matter, not shape.
//   all_reduce(data)              data <- op over ranks of data                (in place)
//   reduce_scatter(in, out)       out <- sum over ranks of in[rank*n .. +n), n = out.numel()
//   all_gather(in, out)           out[r*n .. +n) <- in of rank r,           n = in.numel()
//   broadcast(data, root)         data <- root's data
//   send(data, peer, tag) / recv(data, peer, tag)
//   all_to_all(in, send_counts, out, recv_counts)   in holds size() consecutive chunks,
//                                 chunk r (send_counts[r] elements) for rank r; out gets
//                                 size() chunks, chunk r (recv_counts[r]) from rank r
//                                 (MPI_Alltoallv without gaps; expert parallelism's moves)
//   barrier()
// Reductions take F32, BF16, F16, I32 and I64 where the backend can (MPI: F32, I32, I64;
// DType has no F64, so a double goes through all_reduce_scalar); the others move any
// dtype. The tensors must stay untouched until the Work is waited on (backends also hold
// their storage, see "Timeouts" below).
//
// In-place forms: all_gather with `input` being this rank's slot of `output`, and
// reduce_scatter with `output` being this rank's slot of `input`, both work (as in NCCL).
//
// Each communicator counts calls and bytes per collective (bytes: all_reduce, broadcast,
// send, recv: the data; reduce_scatter, all_to_all: the input; all_gather: the output;
// barrier: 0) and
// the seconds its Works spent blocked in wait(). Tests assert on these counters.
//
// Timeouts. A wait that does not complete within comm_timeout() seconds throws titan::Error
// naming the collective and the group: a rank that stops answering makes the others fail
// (exit 1), never hang. The trainer sets comm.init_timeout_seconds until the first step is
// done and comm.train_timeout_seconds afterwards. The operation that timed out is
// abandoned, not freed: a late peer may still write into its buffers, so it stays alive
// (with the storage of its tensors) in a process-wide list that is never destroyed, and
// complete_abandoned_operations() can finish it if the peers do catch up. The same happens
// to a Work destroyed while an exception is on its way out: waiting there could hang on
// peers that took another path, and the exception already ends the run.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "titan/core/tensor.h"

namespace titan::distributed {

enum class Collective : int {
  AllReduce, ReduceScatter, AllGather, Broadcast, Send, Recv, AllToAll, Barrier
};
inline constexpr int kCollectiveCount = 8;
const char* collective_name(Collective collective);  // "all_reduce", ...

enum class ReduceOp { Sum, Max, Min };

struct CollectiveCount {
  int64_t calls = 0;
  int64_t bytes = 0;
};

struct CommStats {
  std::array<CollectiveCount, kCollectiveCount> collectives{};
  double wait_seconds = 0;  // time spent blocked in Work::wait
  const CollectiveCount& operator[](Collective c) const { return collectives[size_t(c)]; }
  CollectiveCount& operator[](Collective c) { return collectives[size_t(c)]; }
};

// The timeout of every wait in this process, in seconds (default 300). `setting` names the
// config key it came from, for the timeout message ("comm.train_timeout_seconds").
void set_comm_timeout(double seconds, std::string setting = {});
double comm_timeout();

// The state of one started operation; each backend derives its own. It holds handles to
// the tensors it reads or writes, so that an abandoned operation (see "Timeouts") never
// touches freed memory.
class PendingOperation {
 public:
  virtual ~PendingOperation() = default;
  // True once the operation is complete; never blocks for long.
  virtual bool test() = 0;
  // Called once after test() returned true (e.g. a copy out of a staging buffer).
  virtual void finish() {}
};

// Operations whose wait timed out (see "Timeouts"): how many are still incomplete, and a
// poll of all of them for at most `timeout_s`; true when none is left.
int64_t abandoned_operation_count();
bool complete_abandoned_operations(double timeout_s);

// A handle to a started operation. Default-constructed and moved-from handles are complete.
// Destroying (or assigning over) a handle that was not waited on waits for it, and aborts
// the process when that wait fails: a destructor cannot throw. While an exception unwinds,
// it abandons the operation instead (see "Timeouts").
class Work {
 public:
  Work() = default;
  // `bytes` goes into the trace span of the wait (core/trace.h).
  Work(std::unique_ptr<PendingOperation> operation, std::string what, CommStats* stats,
       int64_t bytes = 0);
  Work(Work&&) noexcept;
  Work& operator=(Work&&) noexcept;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work();

  // Blocks until complete; throws titan::Error after comm_timeout() seconds.
  void wait();
  // Non-blocking: true when complete (then finish() has run and wait() returns at once).
  bool done();
  bool pending() const { return operation_ != nullptr; }

 private:
  void settle() noexcept;  // the destructor's wait (or abandonment)
  std::unique_ptr<PendingOperation> operation_;
  std::string what_;  // "all_gather of 4.0 MiB on dp_shard (2 ranks)"
  CommStats* stats_ = nullptr;
  int64_t bytes_ = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }  // "world", "dp_shard", ...

  Work all_reduce(Tensor& data, ReduceOp op = ReduceOp::Sum);
  Work reduce_scatter(const Tensor& input, Tensor& output);
  Work all_gather(const Tensor& input, Tensor& output);
  Work broadcast(Tensor& data, int root);
  Work send(const Tensor& data, int peer, int tag = 0);
  Work recv(Tensor& data, int peer, int tag = 0);
  // Rank s's send_counts[r] must equal rank r's recv_counts[s] (in elements).
  Work all_to_all(const Tensor& input, const std::vector<int64_t>& send_counts, Tensor& output,
                  const std::vector<int64_t>& recv_counts);
  Work barrier();

  // The sub-group of the ranks that pass the same color, ordered by key (MPI_Comm_split).
  // Collective over this communicator.
  virtual std::unique_ptr<Communicator> split(int color, int key, std::string name) = 0;
  // split() by a caller that knows the group already (the mesh: its size and this rank's
  // place in it), which a communicator without peers (FakeCommunicator) needs.
  virtual std::unique_ptr<Communicator> split_known(int color, int key, int /*group_size*/,
                                                    int /*group_rank*/, std::string name) {
    return split(color, key, std::move(name));
  }

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = CommStats{}; }

 protected:
  Communicator(int rank, int size, std::string name) : rank_(rank), size_(size), name_(std::move(name)) {}

  // Backends start the operation; the arguments are already checked (sizes, dtypes, peers).
  virtual std::unique_ptr<PendingOperation> start_all_reduce(Tensor& data, ReduceOp op) = 0;
  virtual std::unique_ptr<PendingOperation> start_reduce_scatter(const Tensor& input,
                                                                 Tensor& output) = 0;
  virtual std::unique_ptr<PendingOperation> start_all_gather(const Tensor& input,
                                                             Tensor& output) = 0;
  virtual std::unique_ptr<PendingOperation> start_broadcast(Tensor& data, int root) = 0;
  virtual std::unique_ptr<PendingOperation> start_send(const Tensor& data, int peer, int tag) = 0;
  virtual std::unique_ptr<PendingOperation> start_recv(Tensor& data, int peer, int tag) = 0;
  virtual std::unique_ptr<PendingOperation> start_all_to_all(
      const Tensor& input, const std::vector<int64_t>& send_counts, Tensor& output,
      const std::vector<int64_t>& recv_counts) = 0;
  virtual std::unique_ptr<PendingOperation> start_barrier() = 0;

 private:
  // Counts the call and wraps the operation; `peer` ("to rank 1") goes into timeout messages.
  Work make_work(Collective collective, int64_t bytes, std::unique_ptr<PendingOperation> op,
                 const std::string& peer = {});
  int rank_;
  int size_;
  std::string name_;
  CommStats stats_;
};

// One rank: every collective is a copy (or nothing); send and recv are errors.
class SelfCommunicator final : public Communicator {
 public:
  explicit SelfCommunicator(std::string name = "self") : Communicator(0, 1, std::move(name)) {}
  std::unique_ptr<Communicator> split(int color, int key, std::string name) override;

 protected:
  std::unique_ptr<PendingOperation> start_all_reduce(Tensor& data, ReduceOp op) override;
  std::unique_ptr<PendingOperation> start_reduce_scatter(const Tensor& input, Tensor& output) override;
  std::unique_ptr<PendingOperation> start_all_gather(const Tensor& input, Tensor& output) override;
  std::unique_ptr<PendingOperation> start_broadcast(Tensor& data, int root) override;
  std::unique_ptr<PendingOperation> start_send(const Tensor& data, int peer, int tag) override;
  std::unique_ptr<PendingOperation> start_recv(Tensor& data, int peer, int tag) override;
  std::unique_ptr<PendingOperation> start_all_to_all(const Tensor& input,
                                                     const std::vector<int64_t>& send_counts,
                                                     Tensor& output,
                                                     const std::vector<int64_t>& recv_counts)
      override;
  std::unique_ptr<PendingOperation> start_barrier() override;
};

// One rank of a world of `size` that is not there (comm.mode fake_backend, train/dry_run.h):
// every collective completes at once and moves no data, and is counted as the real one
// would be (calls and bytes), so a dry run reports each group's volume. split() without
// the group's size gives a communicator of the same size and rank (every rank's color
// alike: the whole world); the mesh calls split_known.
class FakeCommunicator final : public Communicator {
 public:
  FakeCommunicator(int rank, int size, std::string name)
      : Communicator(rank, size, std::move(name)) {}
  std::unique_ptr<Communicator> split(int color, int key, std::string name) override;
  std::unique_ptr<Communicator> split_known(int color, int key, int group_size, int group_rank,
                                            std::string name) override;

 protected:
  std::unique_ptr<PendingOperation> start_all_reduce(Tensor&, ReduceOp) override { return nullptr; }
  std::unique_ptr<PendingOperation> start_reduce_scatter(const Tensor&, Tensor&) override {
    return nullptr;
  }
  std::unique_ptr<PendingOperation> start_all_gather(const Tensor&, Tensor&) override {
    return nullptr;
  }
  std::unique_ptr<PendingOperation> start_broadcast(Tensor&, int) override { return nullptr; }
  std::unique_ptr<PendingOperation> start_send(const Tensor&, int, int) override { return nullptr; }
  std::unique_ptr<PendingOperation> start_recv(Tensor&, int, int) override { return nullptr; }
  std::unique_ptr<PendingOperation> start_all_to_all(const Tensor&, const std::vector<int64_t>&,
                                                     Tensor&,
                                                     const std::vector<int64_t>&) override {
    return nullptr;
  }
  std::unique_ptr<PendingOperation> start_barrier() override { return nullptr; }
};

// Scalar helpers over host tensors: the sum (or max, min) of one value over the group.
// The double form all-gathers the values and combines them in rank order (DType has no
// F64): exact, the same bits on every rank, and counted as an all_gather.
double all_reduce_scalar(Communicator& comm, double value, ReduceOp op = ReduceOp::Sum);
int64_t all_reduce_scalar(Communicator& comm, int64_t value, ReduceOp op = ReduceOp::Sum);

}  // namespace titan::distributed

// MpiCommunicator: host tensors over MPI's nonblocking collectives (docs/design.md,
// "Parallelism"). Debian's Open MPI is not CUDA-aware, so every tensor must be on the CPU;
// device tensors go through NcclCommunicator.
//
//   std::unique_ptr<Communicator> world = MpiCommunicator::world();   // after MPI_Init
//   auto pairs = world->split(world->rank() / 2, world->rank(), "pairs");
//
// MPI counts are ints: a buffer of more elements than one call takes is split into several
// requests (all_reduce, broadcast, send/recv: consecutive pieces; reduce_scatter and
// all_gather: one reduce or broadcast per root and piece), which together are one Work.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "titan/distributed/communicator.h"

namespace titan::distributed {

class MpiCommunicator final : public Communicator {
 public:
  // Owns `comm` (MPI_Comm_free when destroyed) and makes MPI return its errors there, so
  // MPI_CHECK turns them into titan::Error.
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;

  // A duplicate of MPI_COMM_WORLD named "world" (MPI must be initialized).
  static std::unique_ptr<Communicator> world();

  std::unique_ptr<Communicator> split(int color, int key, std::string name) override;

  // For code that must hand MPI a communicator (parallel HDF5, NCCL's unique-id bootstrap).
  MPI_Comm handle() const { return comm_; }

  // The most elements one MPI call moves (INT_MAX); more are split into several calls.
  // Tests lower it so that small tensors take the split paths.
  void set_max_count_per_call(int64_t count);
  int64_t max_count_per_call() const { return max_count_per_call_; }

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

 private:
  void check_on_cpu(const Tensor& t, const char* collective) const;
  MPI_Comm comm_;
  int64_t max_count_per_call_;
};

}  // namespace titan::distributed

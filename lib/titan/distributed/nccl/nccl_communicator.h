// NcclCommunicator: the Communicator for CUDA tensors (docs/design.md, "Parallelism").
//
//   distributed::Communicator& dp_shard_host = mesh.dp_shard();            // MPI, same ranks
//   distributed::NcclCommunicator dp_shard(dp_shard_host, "dp_shard");     // collective: unique id
//   Work gather = dp_shard.all_gather(shard, full);                 // CUDA tensors
//   ... launch compute that does not read `full` ...
//   gather.wait();                                                  // `full` is ready
//
// Built collectively from a host communicator of the same ranks (the bootstrap): rank 0
// makes an ncclUniqueId and broadcasts its 128 bytes over it, then every rank joins with
// ncclCommInitRankConfig on the CUDA device current at construction. The bootstrap is used
// only in the constructor; the NCCL communicator does not keep it.
//
// Nonblocking NCCL (config.blocking = 0), so that nothing waits without a bound: the
// initialisation, the host-side enqueue of each operation (which can wait for peers while
// connections are set up) and ncclCommSplit are polled with ncclCommGetAsyncError until
// they leave ncclInProgress, at most comm_timeout() seconds, then throw titan::Error.
//
// Streams and ordering. Every operation runs on the device's communication stream
// (stream(): titan::cuda::communication_stream(), core/cuda/launch.h, non-blocking and shared
// by every communicator of the device, so collectives of different groups run in the order
// this rank issued them and never wait on each other). Collectives overlap compute.
//   - Inputs: each operation first makes the communication stream wait (an event) for the
//     work queued so far on the compute stream given at construction (default: the device's
//     compute stream, where the CUDA ops and core/copy.h run). So a tensor written by a
//     kernel or a copy just before the call is what gets sent, with no call from the caller,
//     and an output block that the allocator handed out again is no longer used by the
//     kernels of its previous owner. Work on other streams: call wait_for(that_stream)
//     before starting the operation.
//   - Outputs: a Work is complete when the operation is complete on the device (an event
//     recorded after it on the communication stream has been reached), so after wait() the
//     host and every stream may use the results. To hand results to the compute stream
//     without blocking the host, make_stream_wait(compute) makes that stream wait for the
//     operations started so far (an event on the shared stream, so those of the device's
//     other communicators too); the Work must still be waited on (or dropped) later.
// Errors: while a Work is pending its test() also polls ncclCommGetAsyncError; an
// asynchronous NCCL error (a peer gone, a network failure) aborts the communicator and
// throws titan::Error naming the result, NCCL's last error, the operation and the group.
// An operation still running 0.99 * comm_timeout() seconds after it was started aborts the
// communicator (its kernels stop instead of waiting for a rank that will not come) and its
// wait() throws naming the NCCL call and the group; the margin makes this come before the
// base Work's own limit, which would abandon the operation with its kernels still running.
//
// Dtypes. all_reduce and reduce_scatter reduce f32, bf16, f16, i32 and i64 (as NCCL's
// types of the same name); all_gather, broadcast, send and recv move bytes, so any dtype.
// All tensors must be CUDA tensors on the communicator's device.
//
// send / recv: NCCL has no tags. Sends and receives between two ranks match in the order
// they are issued; the tag is ignored. A pair of ranks that both send before they receive
// must batch them in a group (below), as with any NCCL point-to-point code.
//
// Groups batch operations into one NCCL launch (pipeline send/recv pairs, several
// collectives at once):
//   comm.group_start();
//   Work s = comm.send(activations, next);
//   Work r = comm.recv(grad_in, next);
//   comm.group_end();        // NCCL launches the batch here
//   s.wait(); r.wait();      // waiting before group_end() is an error, not a hang
// A group covers the operations of this communicator only. Groups nest like NCCL's; the
// outermost group_end() launches.
//
// Failure and teardown: abort() calls ncclCommAbort, which cancels the operations running
// on the device and frees the communicator without waiting for peers; later operations
// throw, and a Work not yet waited on throws from wait() (its result is undefined). The
// destructor never throws and never waits without a bound. It aborts when finalizing could
// wait on peers that will not come: while the stack unwinds from an exception (a timed-out
// Work, whose operation the base abandons, is the usual case), after an NCCL error or a
// timeout seen here, or when the communication stream has not drained within
// comm_timeout() seconds (an operation still waiting on peers). Otherwise it calls ncclCommFinalize (polled, at most
// comm_timeout() seconds; abort if it does not settle) and ncclCommDestroy. Wait for a
// communicator's Works before destroying it: a Work that outlives it holds the NCCL state
// (so no freed memory is touched), but its wait() throws if the destructor had to abort.
//
// split(color, key, name) uses ncclCommSplit on this communicator (collective over it;
// color >= 0); the result is another NcclCommunicator with the same compute and
// communication streams. Mesh code normally builds one NcclCommunicator per group from
// that group's host communicator instead.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>
#include <vector>

#include "titan/build_config.h"
#include "titan/distributed/communicator.h"

namespace titan::distributed {

namespace detail {
struct NcclState;     // the ncclComm_t, the stream and their teardown; shared with Works
struct NcclCompletion;  // an event recorded after an operation (or a group) on the stream
}  // namespace detail

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (a host communicator of the same ranks, e.g. MPI). Uses the
  // CUDA device current now; `compute` is the stream the operations order after (above;
  // nullptr: the device's compute stream).
  NcclCommunicator(Communicator& bootstrap, std::string name, cudaStream_t compute = nullptr);
  ~NcclCommunicator() override;

  // Collective over this communicator: ncclCommSplit. color must be >= 0.
  std::unique_ptr<Communicator> split(int color, int key, std::string name) override;

  cudaStream_t stream() const;           // where this communicator's operations run
  cudaStream_t compute_stream() const { return compute_; }
  int device() const;                    // the CUDA device index of the communicator

  // The communication stream waits for the work queued so far on `other` (for inputs
  // produced on a stream other than the compute stream).
  void wait_for(cudaStream_t other);
  // `compute` waits for every operation started so far on this communicator, without
  // blocking the host (results on a stream; the Works must still be waited on or dropped).
  void make_stream_wait(cudaStream_t compute);

  // ncclGroupStart / ncclGroupEnd for this communicator's operations (see above).
  void group_start();
  void group_end();
  bool in_group() const { return group_depth_ > 0; }

  // ncclCommAbort: cancels running operations, frees the NCCL communicator; every later
  // operation on this communicator, and every Work still pending, throws.
  void abort();
  bool aborted() const;

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
  // A communicator made by split(): adopts an initialised NCCL state.
  NcclCommunicator(std::shared_ptr<detail::NcclState> state, int rank, int size, std::string name,
                   cudaStream_t compute);

  // Checks the communicator can start an operation and orders the stream after compute.
  void begin(const char* collective);
  void check_device_tensor(const Tensor& t, const char* collective, const char* argument) const;
  // After the NCCL call: waits for the host-side enqueue (or, inside a group, defers it to
  // group_end()) and returns the operation the Work polls. `keep` holds the tensors.
  std::unique_ptr<PendingOperation> finish_start(ncclResult_t result, const char* call,
                                                 std::vector<Tensor> keep);

  std::shared_ptr<detail::NcclState> state_;
  cudaStream_t compute_ = nullptr;
  Tensor barrier_buffer_;  // one f32 on the device: barrier() all-reduces it
  int group_depth_ = 0;
  std::shared_ptr<detail::NcclCompletion> group_completion_;  // shared by the open group's ops
};

}  // namespace titan::distributed

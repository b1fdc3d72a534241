// NcclCommunicator (nccl_communicator.h): nonblocking NCCL on the device's communication
// stream, every wait bounded by comm_timeout().
//
// The build compiles nccl/ folders only when NCCL was found; the guard keeps this file empty
// in a build that globs it anyway.
#include "titan/build_config.h"

#if TITAN_HAVE_NCCL

#include "titan/distributed/nccl/nccl_communicator.h"

#include <chrono>
#include <cstring>
#include <exception>
#include <thread>
#include <utility>

#include "titan/core/cuda/cuda_check.h"
#include "titan/core/cuda/launch.h"
#include "titan/distributed/nccl/nccl_backend.h"
#include "titan/distributed/nccl/nccl_check.h"

namespace titan::distributed {
namespace detail {

namespace {

// Makes `device` current for a scope (the stream, the events and the NCCL communicator
// belong to one device; the caller's current device is put back).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) {
      CUDA_CHECK(cudaSetDevice(device));
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

// Polls `comm` until it leaves ncclInProgress or `timeout_s` pass. Returns the state it
// settled in (ncclInProgress when time ran out) or the error of ncclCommGetAsyncError.
// Spins briefly (an enqueue usually settles in microseconds), then sleeps between polls so
// a long init does not take a core from the rank's compute threads.
ncclResult_t poll_while_in_progress(ncclComm_t comm, double timeout_s) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (int polls = 0;; ++polls) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t status = ncclCommGetAsyncError(comm, &state);
    if (status != ncclSuccess) return status;
    if (state != ncclInProgress) return state;
    if (std::chrono::duration<double>(Clock::now() - start).count() > timeout_s) return ncclInProgress;
    if (polls < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
}

// Polls until `stream` has no work left or `timeout_s` pass; true when it drained.
bool drain(cudaStream_t stream, double timeout_s) noexcept {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (;;) {
    const cudaError_t status = titan::cuda::polled(cudaStreamQuery(stream));
    if (status == cudaSuccess) return true;
    if (status != cudaErrorNotReady) return false;
    if (std::chrono::duration<double>(Clock::now() - start).count() > timeout_s) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace

struct NcclState {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;      // the device's communication stream (not owned)
  cudaEvent_t input_event = nullptr;   // recorded on compute (or another) stream; stream waits
  cudaEvent_t output_event = nullptr;  // recorded on stream; make_stream_wait's stream waits
  int device = 0;
  std::string name;      // the group's name, also NCCL's commName
  bool aborted = false;
  bool broken = false;   // an error or timeout was seen: teardown aborts instead of finalizing

  NcclState() = default;
  NcclState(const NcclState&) = delete;
  NcclState& operator=(const NcclState&) = delete;

  // The communication stream and events of the device current now. The stream is shared by
  // every communicator of the device (core/cuda/launch.h says why) and outlives them.
  void use_current_device() {
    CUDA_CHECK(cudaGetDevice(&device));
    stream = titan::cuda::communication_stream(device);
    CUDA_CHECK(cudaEventCreateWithFlags(&input_event, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&output_event, cudaEventDisableTiming));
  }

  // `result` of an NCCL call on this communicator: waits out ncclInProgress (bounded), then
  // throws on anything but success, naming the call and the group.
  void settle(ncclResult_t result, const char* call) {
    if (result == ncclInProgress) {
      result = poll_while_in_progress(comm, comm_timeout());
      if (result == ncclInProgress) {
        broken = true;
        TITAN_FAIL() << call << " on NCCL communicator '" << name << "' did not finish within "
                     << comm_timeout() << " s (comm_timeout): a rank of the group is not taking "
                     << "part (stopped, or calling a different collective)";
      }
    }
    if (result != ncclSuccess) {
      broken = true;
      TITAN_FAIL() << call << " on NCCL communicator '" << name
                   << "': " << ncclGetErrorString(result) << nccl_last_error(comm);
    }
  }

  // Throws when NCCL reports an asynchronous error (a peer gone, a network failure), after
  // aborting the communicator: its kernels may be waiting for that peer, and NCCL's word
  // for what to do after an asynchronous error is ncclCommAbort.
  void check_async(const std::string& what) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t status = ncclCommGetAsyncError(comm, &state);
    const ncclResult_t error = status != ncclSuccess ? status : state;
    if (error == ncclSuccess || error == ncclInProgress) return;
    broken = true;
    const std::string last_error = nccl_last_error(comm);
    abort();
    TITAN_FAIL() << what << ": asynchronous NCCL error: " << ncclGetErrorString(error)
                 << last_error << "; the communicator was aborted";
  }

  void abort() noexcept {
    if (comm != nullptr) {
      try {
        DeviceGuard guard(device);
        ncclCommAbort(comm);
      } catch (...) {
        ncclCommAbort(comm);  // the device could not be made current; abort anyway
      }
      comm = nullptr;
    }
    aborted = true;
  }

  // Never throws, never waits without a bound (see the header: finalize when idle and
  // healthy, abort otherwise).
  ~NcclState() {
    int previous = -1;
    const bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != device &&
                          cudaSetDevice(device) == cudaSuccess;
    if (comm != nullptr) {
      bool quiet = !broken && std::uncaught_exceptions() == 0 &&
                   titan::cuda::polled(cudaStreamQuery(stream)) == cudaSuccess;
      if (quiet) {
        ncclResult_t state = ncclSuccess;
        quiet = ncclCommGetAsyncError(comm, &state) == ncclSuccess && state == ncclSuccess;
      }
      if (quiet) {
        ncclResult_t result = ncclCommFinalize(comm);
        if (result == ncclInProgress) result = poll_while_in_progress(comm, comm_timeout());
        quiet = result == ncclSuccess;
      }
      if (quiet) {
        ncclCommDestroy(comm);
      } else {
        ncclCommAbort(comm);
      }
      comm = nullptr;
    }
    if (output_event != nullptr) cudaEventDestroy(output_event);
    if (input_event != nullptr) cudaEventDestroy(input_event);
    cudaGetLastError();  // a failed teardown call must not surface in the caller's next check
    if (switched) cudaSetDevice(previous);
  }
};

// An event recorded after one operation, or after the outermost group_end() of a group.
struct NcclCompletion {
  cudaEvent_t event = nullptr;
  bool recorded = false;
  std::string failure;  // set when the group it belongs to failed to launch

  NcclCompletion() = default;
  NcclCompletion(const NcclCompletion&) = delete;
  NcclCompletion& operator=(const NcclCompletion&) = delete;
  ~NcclCompletion() {
    if (event != nullptr) cudaEventDestroy(event);
  }

  void record(cudaStream_t stream) {
    if (event == nullptr) CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(event, stream));
    recorded = true;
  }
};

}  // namespace detail

namespace {

using detail::NcclCompletion;
using detail::NcclState;

// Complete when the event after the operation has been reached on the device. Holds the
// tensors, so their memory is not handed to anyone else while NCCL still uses it.
//
// Timeout: an operation still running kAbortAfter * comm_timeout() seconds after it was
// started aborts its communicator (ncclCommAbort stops its kernels, which may be waiting for
// a rank that will never come) and finish() throws naming the operation and the group. The
// fraction makes this happen before Work::wait's own limit (its clock starts later, at the
// wait): without it the base would abandon the operation with the kernels still running.
class NcclOperation final : public PendingOperation {
 public:
  static constexpr double kAbortAfter = 0.99;

  NcclOperation(std::shared_ptr<NcclState> state, std::shared_ptr<NcclCompletion> completion,
                std::string what, std::vector<Tensor> keep)
      : state_(std::move(state)),
        completion_(std::move(completion)),
        what_(std::move(what)),
        keep_(std::move(keep)),
        started_(std::chrono::steady_clock::now()) {}

  // An aborted communicator, or a group that never launched, leaves nothing running on the
  // tensors: complete, and finish() reports the failure (so an abandoned operation can be
  // retired by complete_abandoned_operations, and a wait() throws).
  bool test() override {
    if (state_->aborted || !completion_->failure.empty()) return true;
    TITAN_CHECK(completion_->recorded)
        << what_ << " was waited on inside group_start()/group_end(): NCCL launches a group "
        << "at group_end(), so call group_end() first";
    const cudaError_t status = titan::cuda::polled(cudaEventQuery(completion_->event));
    if (status == cudaSuccess) return true;
    if (status != cudaErrorNotReady) {
      state_->broken = true;
      cudaGetLastError();
      TITAN_FAIL() << what_ << ": cudaEventQuery: " << cudaGetErrorString(status);
    }
    state_->check_async(what_);
    const double limit_s = kAbortAfter * comm_timeout();
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count() >
        limit_s) {
      timed_out_after_s_ = limit_s;
      state_->broken = true;
      state_->abort();
      return true;  // nothing runs on the tensors any more; finish() reports
    }
    return false;
  }

  void finish() override {
    keep_.clear();
    TITAN_CHECK(timed_out_after_s_ == 0)
        << what_ << " did not complete within " << timed_out_after_s_ << " s (comm_timeout): "
        << "a rank of the group stopped answering or called a different collective; the NCCL "
        << "communicator '" << state_->name << "' was aborted";
    TITAN_CHECK(!state_->aborted) << what_ << ": the communicator was aborted before it was "
                                  << "waited on; its result is undefined";
    TITAN_CHECK(completion_->failure.empty()) << what_ << ": " << completion_->failure;
  }

 private:
  std::shared_ptr<NcclState> state_;
  std::shared_ptr<NcclCompletion> completion_;
  std::string what_;
  std::vector<Tensor> keep_;
  std::chrono::steady_clock::time_point started_;
  double timed_out_after_s_ = 0;
};

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  TITAN_FAIL() << "unknown ReduceOp " << int(op);
}

// The NCCL type that reductions use for a dtype.
ncclDataType_t nccl_reduce_type(DType dtype, const char* collective) {
  switch (dtype) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    default: break;
  }
  TITAN_FAIL() << collective << " over NCCL reduces f32, bf16, f16, i32 or i64; got "
               << dtype_name(dtype);
}

}  // namespace

// --- construction and teardown -------------------------------------------------------------

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, std::string name, cudaStream_t compute)
    : Communicator(bootstrap.rank(), bootstrap.size(), std::move(name)),
      state_(std::make_shared<NcclState>()),
      compute_(compute) {
  NcclState& s = *state_;
  s.name = this->name();
  s.use_current_device();
  if (compute_ == nullptr) compute_ = titan::cuda::compute_stream(s.device);

  // The unique id travels as 128 host bytes over the bootstrap group.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  Tensor id_bytes = Tensor::empty({int64_t(sizeof(id))}, DType::U8);
  std::memcpy(id_bytes.raw_mutable_data(), &id, sizeof(id));
  bootstrap.broadcast(id_bytes, 0).wait();
  std::memcpy(&id, id_bytes.raw_data(), sizeof(id));

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = s.name.c_str();
  const ncclResult_t result = ncclCommInitRankConfig(&s.comm, size(), id, rank(), &config);
  if (result != ncclSuccess && result != ncclInProgress) {
    // Nothing usable came back; a partial communicator is aborted by ~NcclState.
    s.broken = true;
    TITAN_FAIL() << "ncclCommInitRankConfig for '" << s.name << "' (rank " << rank() << " of "
                 << size() << "): " << ncclGetErrorString(result) << detail::nccl_last_error();
  }
  s.settle(result, "ncclCommInitRankConfig");

  // Zeroed on the compute stream, which the allocator hands blocks out for; barrier() orders
  // after it as every operation does.
  barrier_buffer_ = Tensor::empty({1}, DType::F32, Device::cuda(s.device));
  CUDA_CHECK(cudaMemsetAsync(barrier_buffer_.raw_mutable_data(), 0, sizeof(float), compute_));
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<detail::NcclState> state, int rank, int size,
                                   std::string name, cudaStream_t compute)
    : Communicator(rank, size, std::move(name)), state_(std::move(state)), compute_(compute) {
  detail::DeviceGuard guard(state_->device);
  barrier_buffer_ = Tensor::empty({1}, DType::F32, Device::cuda(state_->device));
  CUDA_CHECK(cudaMemsetAsync(barrier_buffer_.raw_mutable_data(), 0, sizeof(float), compute_));
}

// Aborts when finalizing could wait on peers (see the header); otherwise the NCCL state is
// finalized and destroyed by ~NcclState when its last owner (this, or a Work) goes.
NcclCommunicator::~NcclCommunicator() {
  NcclState& s = *state_;
  if (s.aborted) return;
  if (group_depth_ > 0) {
    for (; group_depth_ > 0; --group_depth_) ncclGroupEnd();  // NCCL's group state is per thread
    s.broken = true;
  }
  // A stream still busy after the bound means an operation that waits on peers (a timed-out,
  // abandoned one): destroying under it would free what its kernel uses.
  if (std::uncaught_exceptions() > 0 || s.broken || !detail::drain(s.stream, comm_timeout())) {
    s.abort();
  }
  cudaGetLastError();
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, std::string name) {
  TITAN_CHECK(color >= 0) << "split of NCCL communicator '" << this->name()
                          << "': color must be >= 0, got " << color;
  begin("split");
  TITAN_CHECK(group_depth_ == 0) << "split of '" << this->name() << "' inside a group";
  NcclState& parent = *state_;
  detail::DeviceGuard guard(parent.device);

  auto child = std::make_shared<NcclState>();
  child->name = name;
  child->use_current_device();
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = child->name.c_str();
  const ncclResult_t result = ncclCommSplit(parent.comm, color, key, &child->comm, &config);
  parent.settle(result, "ncclCommSplit");
  TITAN_CHECK(child->comm != nullptr) << "ncclCommSplit of '" << this->name() << "' returned no "
                                      << "communicator for color " << color;
  child->settle(ncclInProgress, "ncclCommSplit (new communicator)");

  int child_rank = 0, child_size = 0;
  NCCL_CHECK(ncclCommUserRank(child->comm, &child_rank));
  NCCL_CHECK(ncclCommCount(child->comm, &child_size));
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(std::move(child), child_rank, child_size, std::move(name), compute_));
}

// --- streams, groups, abort ------------------------------------------------------------------

cudaStream_t NcclCommunicator::stream() const { return state_->stream; }
int NcclCommunicator::device() const { return state_->device; }
bool NcclCommunicator::aborted() const { return state_->aborted; }

void NcclCommunicator::wait_for(cudaStream_t other) {
  NcclState& s = *state_;
  detail::DeviceGuard guard(s.device);
  // cudaStreamWaitEvent takes the event's latest record at call time, so one event serves.
  CUDA_CHECK(cudaEventRecord(s.input_event, other));
  CUDA_CHECK(cudaStreamWaitEvent(s.stream, s.input_event, 0));
}

void NcclCommunicator::make_stream_wait(cudaStream_t compute) {
  NcclState& s = *state_;
  TITAN_CHECK(group_depth_ == 0) << "make_stream_wait on '" << name() << "' inside a group: "
                                 << "the group's operations are launched at group_end()";
  detail::DeviceGuard guard(s.device);
  CUDA_CHECK(cudaEventRecord(s.output_event, s.stream));
  CUDA_CHECK(cudaStreamWaitEvent(compute, s.output_event, 0));
}

void NcclCommunicator::group_start() {
  TITAN_CHECK(!state_->aborted) << "group_start on aborted NCCL communicator '" << name() << "'";
  NCCL_CHECK(ncclGroupStart());
  if (group_depth_++ == 0) group_completion_ = std::make_shared<NcclCompletion>();
}

void NcclCommunicator::group_end() {
  TITAN_CHECK(group_depth_ > 0) << "group_end on '" << name() << "' without group_start";
  NcclState& s = *state_;
  const ncclResult_t result = ncclGroupEnd();
  if (--group_depth_ > 0) {
    NCCL_CHECK(result);  // an inner end only closes a level
    return;
  }
  std::shared_ptr<NcclCompletion> completion = std::move(group_completion_);
  try {
    detail::DeviceGuard guard(s.device);
    s.settle(result, "ncclGroupEnd");
    completion->record(s.stream);
  } catch (const Error& e) {
    completion->failure = std::string("its group failed to launch: ") + e.what();
    throw;
  }
}

void NcclCommunicator::abort() {
  if (group_depth_ > 0) {
    // Close NCCL's group state of this thread before the communicator goes.
    while (group_depth_ > 0) {
      --group_depth_;
      ncclGroupEnd();
    }
    if (group_completion_) group_completion_->failure = "the communicator was aborted";
    group_completion_.reset();
  }
  state_->abort();
}

// --- operations -------------------------------------------------------------------------------

void NcclCommunicator::begin(const char* collective) {
  NcclState& s = *state_;
  TITAN_CHECK(!s.aborted) << collective << " on aborted NCCL communicator '" << name() << "'";
  TITAN_CHECK(!s.broken) << collective << " on NCCL communicator '" << name()
                         << "' after an error or timeout on it; abort() it";
  wait_for(compute_);
}

void NcclCommunicator::check_device_tensor(const Tensor& t, const char* collective,
                                           const char* argument) const {
  TITAN_CHECK(t.defined()) << collective << " on '" << name() << "': " << argument
                           << " is an undefined tensor";
  TITAN_CHECK(t.device() == Device::cuda(state_->device))
      << collective << " on NCCL communicator '" << name() << "' takes tensors on "
      << Device::cuda(state_->device) << "; " << argument << " is on " << t.device();
}

std::unique_ptr<PendingOperation> NcclCommunicator::finish_start(ncclResult_t result,
                                                                 const char* call,
                                                                 std::vector<Tensor> keep) {
  NcclState& s = *state_;
  std::string what = std::string(call) + " on '" + name() + "'";
  if (group_depth_ > 0) {
    // Inside a group NCCL only queues the call; ncclGroupEnd launches (and may report).
    if (result != ncclInProgress) NCCL_CHECK(result);
    return std::make_unique<NcclOperation>(state_, group_completion_, std::move(what),
                                           std::move(keep));
  }
  s.settle(result, call);
  auto completion = std::make_shared<NcclCompletion>();
  completion->record(s.stream);
  return std::make_unique<NcclOperation>(state_, std::move(completion), std::move(what),
                                         std::move(keep));
}

std::unique_ptr<PendingOperation> NcclCommunicator::start_all_reduce(Tensor& data, ReduceOp op) {
  begin("all_reduce");
  check_device_tensor(data, "all_reduce", "data");
  const ncclDataType_t type = nccl_reduce_type(data.dtype(), "all_reduce");
  detail::DeviceGuard guard(state_->device);
  const ncclResult_t result = ncclAllReduce(data.raw_data(), data.raw_mutable_data(),
                                            size_t(data.numel()), type, nccl_op(op),
                                            state_->comm, state_->stream);
  return finish_start(result, "ncclAllReduce", {data});
}

std::unique_ptr<PendingOperation> NcclCommunicator::start_reduce_scatter(const Tensor& input,
                                                                         Tensor& output) {
  begin("reduce_scatter");
  check_device_tensor(input, "reduce_scatter", "input");
  check_device_tensor(output, "reduce_scatter", "output");
  const ncclDataType_t type = nccl_reduce_type(output.dtype(), "reduce_scatter");
  detail::DeviceGuard guard(state_->device);
  const ncclResult_t result =
      ncclReduceScatter(input.raw_data(), output.raw_mutable_data(), size_t(output.numel()), type,
                        ncclSum, state_->comm, state_->stream);
  return finish_start(result, "ncclReduceScatter", {input, output});
}

// Moves are bytes: any dtype, and no NCCL type to keep in step with DType.
std::unique_ptr<PendingOperation> NcclCommunicator::start_all_gather(const Tensor& input,
                                                                     Tensor& output) {
  begin("all_gather");
  check_device_tensor(input, "all_gather", "input");
  check_device_tensor(output, "all_gather", "output");
  detail::DeviceGuard guard(state_->device);
  const ncclResult_t result =
      ncclAllGather(input.raw_data(), output.raw_mutable_data(), size_t(input.bytes()), ncclUint8,
                    state_->comm, state_->stream);
  return finish_start(result, "ncclAllGather", {input, output});
}

std::unique_ptr<PendingOperation> NcclCommunicator::start_broadcast(Tensor& data, int root) {
  begin("broadcast");
  check_device_tensor(data, "broadcast", "data");
  detail::DeviceGuard guard(state_->device);
  const ncclResult_t result = ncclBroadcast(data.raw_data(), data.raw_mutable_data(),
                                            size_t(data.bytes()), ncclUint8, root, state_->comm,
                                            state_->stream);
  return finish_start(result, "ncclBroadcast", {data});
}

std::unique_ptr<PendingOperation> NcclCommunicator::start_send(const Tensor& data, int peer,
                                                               int /*tag: NCCL matches in order*/) {
  begin("send");
  check_device_tensor(data, "send", "data");
  detail::DeviceGuard guard(state_->device);
  const ncclResult_t result = ncclSend(data.raw_data(), size_t(data.bytes()), ncclUint8, peer,
                                       state_->comm, state_->stream);
  return finish_start(result, "ncclSend", {data});
}

std::unique_ptr<PendingOperation> NcclCommunicator::start_recv(Tensor& data, int peer,
                                                               int /*tag: NCCL matches in order*/) {
  begin("recv");
  check_device_tensor(data, "recv", "data");
  detail::DeviceGuard guard(state_->device);
  const ncclResult_t result = ncclRecv(data.raw_mutable_data(), size_t(data.bytes()), ncclUint8,
                                       peer, state_->comm, state_->stream);
  return finish_start(result, "ncclRecv", {data});
}

// NCCL has no all-to-all: one send and one receive per peer with a chunk, in one group.
std::unique_ptr<PendingOperation> NcclCommunicator::start_all_to_all(
    const Tensor& input, const std::vector<int64_t>& send_counts, Tensor& output,
    const std::vector<int64_t>& recv_counts) {
  begin("all_to_all");
  check_device_tensor(input, "all_to_all", "input");
  check_device_tensor(output, "all_to_all", "output");
  detail::DeviceGuard guard(state_->device);
  const int64_t element = dtype_bytes(input.dtype());
  const char* from = static_cast<const char*>(input.raw_data());
  char* to = static_cast<char*>(output.raw_mutable_data());
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t result = ncclSuccess;
  int64_t sent = 0, received = 0;
  for (int peer = 0; peer < size() && (result == ncclSuccess || result == ncclInProgress);
       ++peer) {
    const int64_t out = send_counts[size_t(peer)] * element;
    const int64_t in = recv_counts[size_t(peer)] * element;
    if (out > 0) {
      result = ncclSend(from + sent, size_t(out), ncclUint8, peer, state_->comm, state_->stream);
    }
    if (in > 0 && (result == ncclSuccess || result == ncclInProgress)) {
      result = ncclRecv(to + received, size_t(in), ncclUint8, peer, state_->comm, state_->stream);
    }
    sent += out;
    received += in;
  }
  const ncclResult_t ended = ncclGroupEnd();
  if (result == ncclSuccess) result = ended;
  return finish_start(result, "ncclSend/ncclRecv (all_to_all)", {input, output});
}

// A one-element all-reduce: complete on a rank only once every rank has started it.
std::unique_ptr<PendingOperation> NcclCommunicator::start_barrier() {
  begin("barrier");
  detail::DeviceGuard guard(state_->device);
  const ncclResult_t result =
      ncclAllReduce(barrier_buffer_.raw_data(), barrier_buffer_.raw_mutable_data(), 1, ncclFloat32,
                    ncclSum, state_->comm, state_->stream);
  return finish_start(result, "ncclAllReduce (barrier)", {barrier_buffer_});
}

}  // namespace titan::distributed

namespace titan::distributed::nccl {

std::unique_ptr<Communicator> make_communicator(Communicator& bootstrap, std::string name) {
  return std::make_unique<NcclCommunicator>(bootstrap, std::move(name));
}

std::string library_version() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "built (version unknown)";
  // NCCL encodes versions as integers: 22105 -> 2.21.5 (before 2.9: 2804 -> 2.8.4).
  const int major = version >= 10000 ? version / 10000 : version / 1000;
  const int minor = version >= 10000 ? version / 100 % 100 : version / 100 % 10;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(version % 100);
}

}  // namespace titan::distributed::nccl

#endif  // TITAN_HAVE_NCCL

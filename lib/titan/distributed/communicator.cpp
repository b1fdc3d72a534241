#include "titan/distributed/communicator.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "titan/core/copy.h"
#include "titan/core/trace.h"

namespace titan::distributed {
namespace {

using Clock = std::chrono::steady_clock;

struct TimeoutSetting {
  std::mutex mutex;
  double seconds = 300;
  std::string setting;  // the config key it came from; empty when set by code
};

TimeoutSetting& timeout_setting() {
  static TimeoutSetting timeout;
  return timeout;
}

// Operations abandoned after a timeout. Deliberately never destroyed: at exit, the storage
// they hold would go back to allocators that may already be gone.
struct Abandoned {
  std::mutex mutex;
  std::vector<std::unique_ptr<PendingOperation>> operations;
};

Abandoned& abandoned() {
  static Abandoned* list = new Abandoned;
  return *list;
}

void abandon(std::unique_ptr<PendingOperation> operation) {
  Abandoned& list = abandoned();
  std::lock_guard lock(list.mutex);
  list.operations.push_back(std::move(operation));
}

// Polls without taking a core from the other ranks of an oversubscribed node: a few hundred
// yields first (a collective that is nearly done), then sleeps that grow to 200 us.
class Backoff {
 public:
  void pause() {
    if (yields_ < kYields) {
      ++yields_;
      sched_yield();
      return;
    }
    std::this_thread::sleep_for(sleep_);
    sleep_ = std::min(sleep_ * 2, std::chrono::microseconds(200));
  }

 private:
  static constexpr int kYields = 300;
  int yields_ = 0;
  std::chrono::microseconds sleep_{50};
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_bytes(int64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static const char* const units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = double(bytes);
  int unit = -1;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  return text;
}

std::string format_seconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", seconds);
  return text;
}

// What a backend may reduce; each backend checks what it can (MPI: no f16).
bool is_reducible(DType dtype) {
  return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16 ||
         dtype == DType::I32 || dtype == DType::I64;
}

void check_defined(const Tensor& t, const char* collective, const char* argument) {
  TITAN_CHECK(t.defined()) << collective << ": " << argument << " is an undefined tensor";
}

// dst <- src for two tensors of the same dtype and numel that may be the same buffer.
void copy_flat(const Tensor& src, Tensor& dst) {
  if (src.bytes() == 0 || src.raw_data() == dst.raw_data()) return;
  if (src.device().is_cpu() && dst.device().is_cpu()) {
    std::memmove(dst.raw_mutable_data(), src.raw_data(), size_t(src.bytes()));
  } else {
    copy_tensor(src.reshape(dst.shape()), dst);
  }
}

}  // namespace

const char* collective_name(Collective collective) {
  switch (collective) {
    case Collective::AllReduce: return "all_reduce";
    case Collective::ReduceScatter: return "reduce_scatter";
    case Collective::AllGather: return "all_gather";
    case Collective::Broadcast: return "broadcast";
    case Collective::Send: return "send";
    case Collective::Recv: return "recv";
    case Collective::AllToAll: return "all_to_all";
    case Collective::Barrier: return "barrier";
  }
  return "?";
}

void set_comm_timeout(double seconds, std::string setting) {
  TITAN_CHECK(seconds > 0) << "communicator timeout must be positive, got " << seconds;
  TimeoutSetting& timeout = timeout_setting();
  std::lock_guard lock(timeout.mutex);
  timeout.seconds = seconds;
  timeout.setting = std::move(setting);
}

double comm_timeout() {
  TimeoutSetting& timeout = timeout_setting();
  std::lock_guard lock(timeout.mutex);
  return timeout.seconds;
}

int64_t abandoned_operation_count() {
  Abandoned& list = abandoned();
  std::lock_guard lock(list.mutex);
  return int64_t(list.operations.size());
}

bool complete_abandoned_operations(double timeout_s) {
  Abandoned& list = abandoned();
  std::lock_guard lock(list.mutex);
  const Clock::time_point start = Clock::now();
  Backoff backoff;
  while (!list.operations.empty()) {
    std::erase_if(list.operations, [](const std::unique_ptr<PendingOperation>& operation) {
      if (!operation->test()) return false;
      try {
        operation->finish();
      } catch (const std::exception&) {
        // Nobody waits for this result any more; what matters is that it stopped pending.
      }
      return true;
    });
    if (list.operations.empty() || seconds_since(start) >= timeout_s) break;
    backoff.pause();
  }
  return list.operations.empty();
}

// ---- Work ------------------------------------------------------------------------------

Work::Work(std::unique_ptr<PendingOperation> operation, std::string what, CommStats* stats,
           int64_t bytes)
    : operation_(std::move(operation)), what_(std::move(what)), stats_(stats), bytes_(bytes) {}

Work::Work(Work&& other) noexcept
    : operation_(std::move(other.operation_)),
      what_(std::move(other.what_)),
      stats_(other.stats_),
      bytes_(other.bytes_) {}

Work& Work::operator=(Work&& other) noexcept {
  if (this != &other) {
    settle();
    operation_ = std::move(other.operation_);
    what_ = std::move(other.what_);
    stats_ = other.stats_;
    bytes_ = other.bytes_;
  }
  return *this;
}

Work::~Work() { settle(); }

void Work::settle() noexcept {
  if (!operation_) return;
  if (std::uncaught_exceptions() > 0) {
    abandon(std::move(operation_));
    return;
  }
  try {
    wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s (a communicator operation nobody waited on)\n", e.what());
    std::fflush(stderr);
    std::abort();
  }
}

void Work::wait() {
  if (!operation_) return;
  TraceSpan span(what_, "bytes", bytes_);
  const Clock::time_point start = Clock::now();
  const double timeout_s = comm_timeout();
  Backoff backoff;
  bool complete = operation_->test();
  while (!complete && seconds_since(start) < timeout_s) {
    backoff.pause();
    complete = operation_->test();
  }
  if (stats_ != nullptr) stats_->wait_seconds += seconds_since(start);
  if (!complete) {
    abandon(std::move(operation_));
    std::string setting;
    {
      TimeoutSetting& timeout = timeout_setting();
      std::lock_guard lock(timeout.mutex);
      setting = timeout.setting;
    }
    // No file:line here: the message is for the user, and names all there is to know.
    throw Error(what_ + " did not complete within " + format_seconds(timeout_s) +
                " s: a rank stopped answering" + (setting.empty() ? "" : " (" + setting + ")"));
  }
  std::unique_ptr<PendingOperation> finished = std::move(operation_);
  finished->finish();
}

bool Work::done() {
  if (!operation_) return true;
  if (!operation_->test()) return false;
  std::unique_ptr<PendingOperation> finished = std::move(operation_);
  finished->finish();
  return true;
}

// ---- Communicator: checks and counters, then the backend ----------------------------------

Work Communicator::make_work(Collective collective, int64_t bytes,
                             std::unique_ptr<PendingOperation> op, const std::string& peer) {
  CollectiveCount& count = stats_[collective];
  ++count.calls;
  count.bytes += bytes;
  std::string what = collective_name(collective);
  if (collective != Collective::Barrier) what += " of " + format_bytes(bytes);
  if (!peer.empty()) what += " " + peer;
  what += " on " + name_ + " (" + std::to_string(size_) + (size_ == 1 ? " rank)" : " ranks)");
  return Work(std::move(op), std::move(what), &stats_, bytes);
}

Work Communicator::all_reduce(Tensor& data, ReduceOp op) {
  check_defined(data, "all_reduce", "data");
  TITAN_CHECK(is_reducible(data.dtype())) << "all_reduce on " << name_
                                          << " takes f32, bf16, f16, i32 or i64 tensors, got "
                                          << dtype_name(data.dtype());
  return make_work(Collective::AllReduce, data.bytes(), start_all_reduce(data, op));
}

Work Communicator::reduce_scatter(const Tensor& input, Tensor& output) {
  check_defined(input, "reduce_scatter", "input");
  check_defined(output, "reduce_scatter", "output");
  TITAN_CHECK(input.dtype() == output.dtype())
      << "reduce_scatter on " << name_ << ": input is " << dtype_name(input.dtype())
      << ", output is " << dtype_name(output.dtype());
  TITAN_CHECK(is_reducible(input.dtype())) << "reduce_scatter on " << name_
                                           << " takes f32, bf16, f16, i32 or i64 tensors, got "
                                           << dtype_name(input.dtype());
  TITAN_CHECK(input.numel() == int64_t(size_) * output.numel())
      << "reduce_scatter on " << name_ << " (" << size_ << " ranks): input has " << input.numel()
      << " elements, expected " << size_ << " x output (" << output.numel() << ")";
  TITAN_CHECK(input.device() == output.device())
      << "reduce_scatter on " << name_ << ": input on " << input.device() << ", output on "
      << output.device();
  return make_work(Collective::ReduceScatter, input.bytes(), start_reduce_scatter(input, output));
}

Work Communicator::all_gather(const Tensor& input, Tensor& output) {
  check_defined(input, "all_gather", "input");
  check_defined(output, "all_gather", "output");
  TITAN_CHECK(input.dtype() == output.dtype())
      << "all_gather on " << name_ << ": input is " << dtype_name(input.dtype()) << ", output is "
      << dtype_name(output.dtype());
  TITAN_CHECK(output.numel() == int64_t(size_) * input.numel())
      << "all_gather on " << name_ << " (" << size_ << " ranks): output has " << output.numel()
      << " elements, expected " << size_ << " x input (" << input.numel() << ")";
  TITAN_CHECK(input.device() == output.device())
      << "all_gather on " << name_ << ": input on " << input.device() << ", output on "
      << output.device();
  return make_work(Collective::AllGather, output.bytes(), start_all_gather(input, output));
}

Work Communicator::broadcast(Tensor& data, int root) {
  check_defined(data, "broadcast", "data");
  TITAN_CHECK(root >= 0 && root < size_)
      << "broadcast on " << name_ << ": root " << root << " is not a rank of " << size_;
  return make_work(Collective::Broadcast, data.bytes(), start_broadcast(data, root),
                   "from rank " + std::to_string(root));
}

Work Communicator::send(const Tensor& data, int peer, int tag) {
  check_defined(data, "send", "data");
  TITAN_CHECK(peer >= 0 && peer < size_)
      << "send on " << name_ << ": peer " << peer << " is not a rank of " << size_;
  TITAN_CHECK(tag >= 0) << "send on " << name_ << ": tag must be >= 0, got " << tag;
  return make_work(Collective::Send, data.bytes(), start_send(data, peer, tag),
                   "to rank " + std::to_string(peer));
}

Work Communicator::recv(Tensor& data, int peer, int tag) {
  check_defined(data, "recv", "data");
  TITAN_CHECK(peer >= 0 && peer < size_)
      << "recv on " << name_ << ": peer " << peer << " is not a rank of " << size_;
  TITAN_CHECK(tag >= 0) << "recv on " << name_ << ": tag must be >= 0, got " << tag;
  return make_work(Collective::Recv, data.bytes(), start_recv(data, peer, tag),
                   "from rank " + std::to_string(peer));
}

Work Communicator::all_to_all(const Tensor& input, const std::vector<int64_t>& send_counts,
                              Tensor& output, const std::vector<int64_t>& recv_counts) {
  check_defined(input, "all_to_all", "input");
  check_defined(output, "all_to_all", "output");
  TITAN_CHECK(input.dtype() == output.dtype() && input.device() == output.device())
      << "all_to_all on " << name_ << ": input and output differ in dtype or device";
  TITAN_CHECK(int64_t(send_counts.size()) == size_ && int64_t(recv_counts.size()) == size_)
      << "all_to_all on " << name_ << " (" << size_ << " ranks): " << send_counts.size()
      << " send and " << recv_counts.size() << " receive counts";
  int64_t sent = 0, received = 0;
  for (int r = 0; r < size_; ++r) {
    TITAN_CHECK(send_counts[size_t(r)] >= 0 && recv_counts[size_t(r)] >= 0)
        << "all_to_all on " << name_ << ": negative count";
    sent += send_counts[size_t(r)];
    received += recv_counts[size_t(r)];
  }
  TITAN_CHECK(sent == input.numel() && received == output.numel())
      << "all_to_all on " << name_ << ": counts of " << sent << " and " << received
      << " elements for an input of " << input.numel() << " and an output of "
      << output.numel();
  return make_work(Collective::AllToAll, input.bytes(),
                   start_all_to_all(input, send_counts, output, recv_counts));
}

Work Communicator::barrier() { return make_work(Collective::Barrier, 0, start_barrier()); }

// ---- SelfCommunicator: one rank, so every collective is the identity or a copy ------------

std::unique_ptr<Communicator> SelfCommunicator::split(int color, int /*key*/, std::string name) {
  TITAN_CHECK(color >= 0) << "split of " << this->name() << ": color must be >= 0, got " << color;
  return std::make_unique<SelfCommunicator>(std::move(name));
}

std::unique_ptr<PendingOperation> SelfCommunicator::start_all_to_all(
    const Tensor& input, const std::vector<int64_t>&, Tensor& output,
    const std::vector<int64_t>&) {
  if (input.numel() > 0 && input.raw_data() != output.raw_data()) {
    Tensor flat = output.reshape({output.numel()});
    copy_tensor(input.reshape({input.numel()}), flat);
  }
  return nullptr;
}

std::unique_ptr<PendingOperation> SelfCommunicator::start_all_reduce(Tensor&, ReduceOp) {
  return nullptr;
}

std::unique_ptr<PendingOperation> SelfCommunicator::start_reduce_scatter(const Tensor& input,
                                                                         Tensor& output) {
  copy_flat(input, output);
  return nullptr;
}

std::unique_ptr<PendingOperation> SelfCommunicator::start_all_gather(const Tensor& input,
                                                                     Tensor& output) {
  copy_flat(input, output);
  return nullptr;
}

std::unique_ptr<PendingOperation> SelfCommunicator::start_broadcast(Tensor&, int) { return nullptr; }

std::unique_ptr<PendingOperation> SelfCommunicator::start_send(const Tensor&, int, int) {
  TITAN_FAIL() << "send on " << name() << ", a one-rank communicator: there is no other rank";
}

std::unique_ptr<PendingOperation> SelfCommunicator::start_recv(Tensor&, int, int) {
  TITAN_FAIL() << "recv on " << name() << ", a one-rank communicator: there is no other rank";
}

std::unique_ptr<PendingOperation> SelfCommunicator::start_barrier() { return nullptr; }

// ---- FakeCommunicator ----------------------------------------------------------------------

std::unique_ptr<Communicator> FakeCommunicator::split(int color, int key, std::string name) {
  return split_known(color, key, size(), rank(), std::move(name));
}

std::unique_ptr<Communicator> FakeCommunicator::split_known(int color, int /*key*/,
                                                            int group_size, int group_rank,
                                                            std::string name) {
  TITAN_CHECK(color >= 0 && group_rank >= 0 && group_rank < group_size)
      << "split of " << this->name() << ": rank " << group_rank << " of " << group_size
      << ", color " << color;
  return std::make_unique<FakeCommunicator>(group_rank, group_size, std::move(name));
}

// ---- scalars ------------------------------------------------------------------------------

double all_reduce_scalar(Communicator& comm, double value, ReduceOp op) {
  Tensor mine = Tensor::empty({int64_t(sizeof value)}, DType::U8);
  std::memcpy(mine.mutable_data<uint8_t>(), &value, sizeof value);
  Tensor all = Tensor::empty({comm.size() * int64_t(sizeof value)}, DType::U8);
  comm.all_gather(mine, all).wait();
  const uint8_t* bytes = all.data<uint8_t>();
  double result = 0;
  for (int rank = 0; rank < comm.size(); ++rank) {
    double v;
    std::memcpy(&v, bytes + rank * sizeof v, sizeof v);
    if (rank == 0) {
      result = v;
      continue;
    }
    switch (op) {
      case ReduceOp::Sum: result += v; break;
      case ReduceOp::Max: result = std::max(result, v); break;
      case ReduceOp::Min: result = std::min(result, v); break;
    }
  }
  return result;
}

int64_t all_reduce_scalar(Communicator& comm, int64_t value, ReduceOp op) {
  Tensor t = Tensor::empty({1}, DType::I64);
  t.mutable_data<int64_t>()[0] = value;
  comm.all_reduce(t, op).wait();
  return t.data<int64_t>()[0];
}

}  // namespace titan::distributed

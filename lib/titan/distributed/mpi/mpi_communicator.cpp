#include "titan/distributed/mpi/mpi_communicator.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "titan/core/comm_poll.h"
#include "titan/core/float_formats.h"
#include "titan/distributed/mpi/mpi_check.h"

namespace titan::distributed {
namespace {

int comm_rank(MPI_Comm comm) {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  return rank;
}

int comm_size(MPI_Comm comm) {
  int size = 0;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  return size;
}

// The requests of one started operation, and the tensors whose buffers they read or write:
// holding those keeps the memory alive even when a timed-out operation is abandoned and a
// late peer completes it.
class MpiOperation;

// The operations in flight by starting thread, which that thread's op dispatches poll while
// it has any (core/comm_poll.h): MPI advances a non-blocking collective only inside MPI
// calls. Per thread, so that no request is tested by two threads (an asynchronous
// checkpoint's I/O thread has its own: MPI_THREAD_MULTIPLE). Never destroyed: an abandoned
// operation may outlive every other static.
struct InFlight {
  std::mutex mutex;
  std::map<std::thread::id, std::vector<MpiOperation*>> by_thread;
};
InFlight& in_flight() {
  static InFlight* registry = new InFlight;
  return *registry;
}
void poll_in_flight();

class MpiOperation final : public PendingOperation {
 public:
  explicit MpiOperation(std::vector<Tensor> buffers)
      : buffers_(std::move(buffers)), thread_(std::this_thread::get_id()) {
    InFlight& registry = in_flight();
    const std::lock_guard<std::mutex> lock(registry.mutex);
    std::vector<MpiOperation*>& mine = registry.by_thread[thread_];
    if (mine.empty()) set_comm_poll(poll_in_flight);
    mine.push_back(this);
  }
  ~MpiOperation() override {
    InFlight& registry = in_flight();
    const std::lock_guard<std::mutex> lock(registry.mutex);
    std::vector<MpiOperation*>& mine = registry.by_thread[thread_];
    mine.erase(std::find(mine.begin(), mine.end(), this));
    // The poll is the starting thread's; elsewhere it stays and finds nothing.
    if (mine.empty() && thread_ == std::this_thread::get_id()) set_comm_poll(nullptr);
  }
  MpiOperation(const MpiOperation&) = delete;
  MpiOperation& operator=(const MpiOperation&) = delete;
  void add(MPI_Request request) { requests_.push_back(request); }
  // An array a non-blocking call reads until it completes (MPI_Ialltoallv's counts).
  const int* keep(std::vector<int> values) {
    arrays_.push_back(std::move(values));
    return arrays_.back().data();
  }
  bool test() override {
    if (requests_.empty()) return true;
    int complete = 0;
    MPI_CHECK(MPI_Testall(int(requests_.size()), requests_.data(), &complete, MPI_STATUSES_IGNORE));
    return complete != 0;
  }

 private:
  std::vector<MPI_Request> requests_;
  std::vector<Tensor> buffers_;
  std::deque<std::vector<int>> arrays_;  // a deque: kept arrays never move
  std::thread::id thread_;  // that started it
};

void poll_in_flight() {
  InFlight& registry = in_flight();
  const std::lock_guard<std::mutex> lock(registry.mutex);
  for (MpiOperation* operation : registry.by_thread[std::this_thread::get_id()]) {
    operation->test();
  }
}

MPI_Datatype reduce_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return MPI_FLOAT;
    case DType::BF16: return MPI_UINT16_T;  // combined by the bf16 ops below
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
    default:
      TITAN_FAIL() << "MpiCommunicator reduces f32, bf16, i32 and i64 tensors, got "
                   << dtype_name(dtype);
  }
}

// MPI has no bf16 type: bf16 travels as 16-bit integers, and these operations combine two
// elements as a GPU's NCCL does, widened to f32, combined, rounded once to nearest even
// (mixed precision's tensor-parallel activations on CPU ranks).
template <ReduceOp kOp>
void combine_bf16(void* in, void* inout, int* length, MPI_Datatype* /*type*/) {
  const bf16_t* a = static_cast<const bf16_t*>(in);
  bf16_t* b = static_cast<bf16_t*>(inout);
  for (int i = 0; i < *length; ++i) {
    const float x = f32_from_bf16(a[i]), y = f32_from_bf16(b[i]);
    const float combined = kOp == ReduceOp::Sum ? x + y
                           : kOp == ReduceOp::Max ? std::max(x, y)
                                                  : std::min(x, y);
    b[i] = bf16_from_f32(combined);
  }
}

MPI_Op bf16_op(ReduceOp op) {
  static const std::array<MPI_Op, 3> ops = [] {  // made once, after MPI_Init; MPI frees them
    std::array<MPI_Op, 3> made{};
    MPI_CHECK(MPI_Op_create(&combine_bf16<ReduceOp::Sum>, 1, &made[0]));
    MPI_CHECK(MPI_Op_create(&combine_bf16<ReduceOp::Max>, 1, &made[1]));
    MPI_CHECK(MPI_Op_create(&combine_bf16<ReduceOp::Min>, 1, &made[2]));
    return made;
  }();
  return ops[op == ReduceOp::Sum ? 0 : op == ReduceOp::Max ? 1 : 2];
}

// Collectives that only move data move elements as unsigned integers of the same width:
// bits are copied, never converted, and counts stay in elements (INT_MAX of them per call).
MPI_Datatype move_type(DType dtype) {
  switch (dtype_bytes(dtype)) {
    case 1: return MPI_UINT8_T;
    case 2: return MPI_UINT16_T;
    case 4: return MPI_UINT32_T;
    case 8: return MPI_UINT64_T;
    default: TITAN_FAIL() << "no MPI type for " << dtype_name(dtype);
  }
}

MPI_Op mpi_op(ReduceOp op, DType dtype) {
  if (dtype == DType::BF16) return bf16_op(op);
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  TITAN_FAIL() << "unknown reduce op";
}

// Calls start(offset, count) for consecutive pieces of at most `max` of `count` elements.
template <class Start>
void for_each_piece(int64_t count, int64_t max, Start&& start) {
  for (int64_t offset = 0; offset < count; offset += max) {
    start(offset, int(std::min(max, count - offset)));
  }
}

char* bytes_of(Tensor& t) { return static_cast<char*>(t.raw_mutable_data()); }
const char* bytes_of(const Tensor& t) { return static_cast<const char*>(t.raw_data()); }

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.bytes() == 0 || b.bytes() == 0) return false;
  const char* pa = bytes_of(a);
  const char* pb = bytes_of(b);
  return pa < pb + b.bytes() && pb < pa + a.bytes();
}

Tensor flat_copy(const Tensor& t) {
  Tensor copy = Tensor::empty({t.numel()}, t.dtype());
  if (t.bytes() > 0) std::memcpy(copy.raw_mutable_data(), t.raw_data(), size_t(t.bytes()));
  return copy;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : Communicator(comm_rank(comm), comm_size(comm), std::move(name)),
      comm_(comm),
      max_count_per_call_(INT_MAX) {
  MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
}

MpiCommunicator::~MpiCommunicator() {
  // A communicator that outlives MPI_Finalize (a static, a leak at exit) has nothing to free.
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::unique_ptr<Communicator> MpiCommunicator::world() {
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  return std::make_unique<MpiCommunicator>(dup, "world");
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, std::string name) {
  TITAN_CHECK(color >= 0) << "split of " << this->name() << ": color must be >= 0, got " << color;
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
  return std::make_unique<MpiCommunicator>(sub, std::move(name));
}

void MpiCommunicator::set_max_count_per_call(int64_t count) {
  TITAN_CHECK(count >= 1 && count <= INT_MAX) << "max count per MPI call must be in [1, INT_MAX], got "
                                              << count;
  max_count_per_call_ = count;
}

void MpiCommunicator::check_on_cpu(const Tensor& t, const char* collective) const {
  TITAN_CHECK(t.device().is_cpu())
      << collective << " on " << name() << ": MpiCommunicator moves host tensors, got one on "
      << t.device() << " (this Open MPI is not CUDA-aware; device tensors go through NCCL)";
}

std::unique_ptr<PendingOperation> MpiCommunicator::start_all_reduce(Tensor& data, ReduceOp op) {
  check_on_cpu(data, "all_reduce");
  const MPI_Datatype type = reduce_type(data.dtype());
  auto operation = std::make_unique<MpiOperation>(std::vector<Tensor>{data});
  char* base = bytes_of(data);
  const int64_t element_bytes = dtype_bytes(data.dtype());
  for_each_piece(data.numel(), max_count_per_call_, [&](int64_t offset, int count) {
    MPI_Request request;
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, base + offset * element_bytes, count, type,
                             mpi_op(op, data.dtype()), comm_, &request));
    operation->add(request);
  });
  return operation;
}

std::unique_ptr<PendingOperation> MpiCommunicator::start_reduce_scatter(const Tensor& input,
                                                                        Tensor& output) {
  check_on_cpu(input, "reduce_scatter");
  check_on_cpu(output, "reduce_scatter");
  // MPI's in-place reduce-scatter is not ours (NCCL's: output is this rank's slot of the
  // input); a private copy of the input makes any overlap safe.
  const MPI_Datatype type = reduce_type(output.dtype());
  const MPI_Op sum = mpi_op(ReduceOp::Sum, output.dtype());
  const Tensor in = overlaps(input, output) ? flat_copy(input) : input;
  auto operation = std::make_unique<MpiOperation>(std::vector<Tensor>{in, output});
  const int64_t n = output.numel();
  const int64_t element_bytes = dtype_bytes(output.dtype());
  const char* in_bytes = bytes_of(in);
  char* out_bytes = bytes_of(output);
  if (n * size() <= max_count_per_call_) {
    if (n == 0) return operation;
    MPI_Request request;
    MPI_CHECK(MPI_Ireduce_scatter_block(in_bytes, out_bytes, int(n), type, sum, comm_, &request));
    operation->add(request);
    return operation;
  }
  // Too many elements for one call: one reduce per root and piece.
  for (int root = 0; root < size(); ++root) {
    for_each_piece(n, max_count_per_call_, [&](int64_t offset, int count) {
      MPI_Request request;
      MPI_CHECK(MPI_Ireduce(in_bytes + (root * n + offset) * element_bytes,
                            root == rank() ? out_bytes + offset * element_bytes : nullptr, count,
                            type, sum, root, comm_, &request));
      operation->add(request);
    });
  }
  return operation;
}

std::unique_ptr<PendingOperation> MpiCommunicator::start_all_gather(const Tensor& input,
                                                                    Tensor& output) {
  check_on_cpu(input, "all_gather");
  check_on_cpu(output, "all_gather");
  const int64_t n = input.numel();
  const int64_t element_bytes = dtype_bytes(input.dtype());
  const MPI_Datatype type = move_type(input.dtype());
  char* out_bytes = bytes_of(output);
  char* own_slot = out_bytes + rank() * n * element_bytes;
  const bool in_place = n > 0 && bytes_of(input) == own_slot;
  const Tensor in = !in_place && overlaps(input, output) ? flat_copy(input) : input;
  auto operation = std::make_unique<MpiOperation>(std::vector<Tensor>{in, output});
  if (n * size() <= max_count_per_call_) {
    if (n == 0) return operation;
    MPI_Request request;
    MPI_CHECK(MPI_Iallgather(in_place ? MPI_IN_PLACE : bytes_of(in), int(n), type, out_bytes,
                             int(n), type, comm_, &request));
    operation->add(request);
    return operation;
  }
  // Too many elements for one call: each rank broadcasts its slot, piece by piece.
  if (!in_place) std::memcpy(own_slot, bytes_of(in), size_t(n * element_bytes));
  for (int root = 0; root < size(); ++root) {
    for_each_piece(n, max_count_per_call_, [&](int64_t offset, int count) {
      MPI_Request request;
      MPI_CHECK(MPI_Ibcast(out_bytes + (root * n + offset) * element_bytes, count, type, root,
                           comm_, &request));
      operation->add(request);
    });
  }
  return operation;
}

std::unique_ptr<PendingOperation> MpiCommunicator::start_broadcast(Tensor& data, int root) {
  check_on_cpu(data, "broadcast");
  auto operation = std::make_unique<MpiOperation>(std::vector<Tensor>{data});
  char* base = bytes_of(data);
  const int64_t element_bytes = dtype_bytes(data.dtype());
  for_each_piece(data.numel(), max_count_per_call_, [&](int64_t offset, int count) {
    MPI_Request request;
    MPI_CHECK(MPI_Ibcast(base + offset * element_bytes, count, move_type(data.dtype()), root, comm_,
                         &request));
    operation->add(request);
  });
  return operation;
}

// Pieces of one send match the receiver's pieces in order: MPI does not let messages with
// the same source, tag and communicator overtake each other.
std::unique_ptr<PendingOperation> MpiCommunicator::start_all_to_all(
    const Tensor& input, const std::vector<int64_t>& send_counts, Tensor& output,
    const std::vector<int64_t>& recv_counts) {
  check_on_cpu(input, "all_to_all");
  check_on_cpu(output, "all_to_all");
  // One MPI_Ialltoallv: counts and displacements are ints, so the chunks must end below
  // max_count_per_call_ elements (2^31: 8 GiB of f32 rows, far beyond an expert exchange).
  TITAN_CHECK(std::max(input.numel(), output.numel()) <= max_count_per_call_)
      << "all_to_all on " << name() << ": " << std::max(input.numel(), output.numel())
      << " elements exceed one MPI call's " << max_count_per_call_;
  const Tensor in = overlaps(input, output) ? flat_copy(input) : input;
  auto operation = std::make_unique<MpiOperation>(std::vector<Tensor>{in, output});
  const auto ints = [](const std::vector<int64_t>& counts, bool displacements) {
    std::vector<int> out(counts.size());
    int64_t offset = 0;
    for (size_t r = 0; r < counts.size(); ++r) {
      out[r] = int(displacements ? offset : counts[r]);
      offset += counts[r];
    }
    return out;
  };
  const MPI_Datatype type = move_type(input.dtype());
  MPI_Request request;
  MPI_CHECK(MPI_Ialltoallv(bytes_of(in), operation->keep(ints(send_counts, false)),
                           operation->keep(ints(send_counts, true)), type, bytes_of(output),
                           operation->keep(ints(recv_counts, false)),
                           operation->keep(ints(recv_counts, true)), type, comm_, &request));
  operation->add(request);
  return operation;
}

std::unique_ptr<PendingOperation> MpiCommunicator::start_send(const Tensor& data, int peer, int tag) {
  check_on_cpu(data, "send");
  auto operation = std::make_unique<MpiOperation>(std::vector<Tensor>{data});
  const char* base = bytes_of(data);
  const int64_t element_bytes = dtype_bytes(data.dtype());
  for_each_piece(data.numel(), max_count_per_call_, [&](int64_t offset, int count) {
    MPI_Request request;
    MPI_CHECK(MPI_Isend(base + offset * element_bytes, count, move_type(data.dtype()), peer, tag,
                        comm_, &request));
    operation->add(request);
  });
  return operation;
}

std::unique_ptr<PendingOperation> MpiCommunicator::start_recv(Tensor& data, int peer, int tag) {
  check_on_cpu(data, "recv");
  auto operation = std::make_unique<MpiOperation>(std::vector<Tensor>{data});
  char* base = bytes_of(data);
  const int64_t element_bytes = dtype_bytes(data.dtype());
  for_each_piece(data.numel(), max_count_per_call_, [&](int64_t offset, int count) {
    MPI_Request request;
    MPI_CHECK(MPI_Irecv(base + offset * element_bytes, count, move_type(data.dtype()), peer, tag,
                        comm_, &request));
    operation->add(request);
  });
  return operation;
}

std::unique_ptr<PendingOperation> MpiCommunicator::start_barrier() {
  auto operation = std::make_unique<MpiOperation>(std::vector<Tensor>{});
  MPI_Request request;
  MPI_CHECK(MPI_Ibarrier(comm_, &request));
  operation->add(request);
  return operation;
}

}  // namespace titan::distributed

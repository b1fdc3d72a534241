#include "titan/distributed/tensor_parallel.h"

#include <algorithm>

#include "titan/core/copy.h"
#include "titan/core/error.h"
#include "titan/ops/elementwise.h"

namespace titan::distributed {
namespace {

// Message tags of the ring steps (each ring is one operation at a time, in program order).
constexpr int kGatherTag = 41;
constexpr int kReduceTag = 42;

// The tp entry of a placement, or null when the parameter has none (tp is 1).
const nn::MeshDimPlacement* tp_dim(const nn::Placement& placement) {
  for (const nn::MeshDimPlacement& d : placement.dims) {
    if (d.mesh_dim == "tp") return &d;
  }
  return nullptr;
}

Shape with_rows(const Tensor& t, int64_t rows) {
  Shape shape = t.shape();
  shape[0] = rows;
  return shape;
}

// Elements [offset, offset + numel) of a flat view.
Tensor flat_slice(const Tensor& t, int64_t offset, int64_t numel) {
  return t.reshape({t.numel()}).narrow(offset, numel);
}

}  // namespace

TensorParallelGroup::TensorParallelGroup(Communicator& group, TensorParallelOptions options)
    : group_(group), options_(options) {}

TensorParallelGroup::~TensorParallelGroup() = default;

void TensorParallelGroup::gather_rows(const Tensor& x, Tensor& full, const nn::UseRows& use) const {
  if (!sequence_parallel()) {
    full = x;
    return use(x, 0);
  }
  if (async()) return ring_gather_rows(x, full, use);
  full = Tensor::empty(with_rows(x, x.size(0) * size()), x.dtype(), x.device());
  group_.all_gather(x, full).wait();
  use(full, 0);
}

void TensorParallelGroup::reduce_rows(Tensor& y, int64_t rows,
                                      const nn::PartialRows& partial) const {
  if (!sequence_parallel()) {
    TITAN_CHECK(y.size(0) == rows) << "reduce_rows: " << rows << " rows into "
                                   << shape_string(y.shape());
    partial(0, rows, y);
    group_.all_reduce(y).wait();
    return;
  }
  TITAN_CHECK(y.size(0) * size() == rows)
      << "reduce_rows: " << rows << " rows over " << size() << " ranks into "
      << shape_string(y.shape());
  if (async()) return ring_reduce_rows(y, rows, partial);
  Tensor all = Tensor::empty(with_rows(y, rows), y.dtype(), y.device());
  partial(0, rows, all);
  group_.reduce_scatter(all, y).wait();
}

void TensorParallelGroup::ring_gather_rows(const Tensor& x, Tensor& full,
                                           const nn::UseRows& use) const {
  const int64_t n = x.size(0), p = size(), r = rank();
  const int right = int((r + 1) % p), left = int((r + p - 1) % p);
  full = Tensor::empty(with_rows(x, n * p), x.dtype(), x.device());
  Tensor own = full.narrow(r * n, n);
  copy_tensor(x, own);
  int64_t block = r;  // the block in hand
  for (int64_t step = 0; step < p; ++step) {
    const int64_t incoming = (block + p - 1) % p;
    Work send, recv;
    if (step + 1 < p) {
      Tensor slot = full.narrow(incoming * n, n);
      recv = group_.recv(slot, left, kGatherTag);
      send = group_.send(full.narrow(block * n, n), right, kGatherTag);
    }
    use(full.narrow(block * n, n), block * n);  // overlaps the transfer of the next block
    send.wait();
    recv.wait();
    block = incoming;
  }
}

void TensorParallelGroup::ring_reduce_rows(Tensor& y, int64_t rows,
                                           const nn::PartialRows& partial) const {
  const int64_t p = size(), r = rank(), n = rows / p;
  const int right = int((r + 1) % p), left = int((r + p - 1) % p);
  // Block b's running sum starts at rank b + 1 and ends, after visiting every rank, at b.
  Tensor sums[2] = {Tensor::empty(y.shape(), y.dtype(), y.device()),
                    Tensor::empty(y.shape(), y.dtype(), y.device())};
  Tensor incoming = Tensor::empty(y.shape(), y.dtype(), y.device());
  Work send;
  for (int64_t step = 0; step < p; ++step) {
    const int64_t block = ((r - step - 1) % p + p) % p;
    Tensor& sum = step + 1 == p ? y : sums[step % 2];  // the other one may still be sending
    Work recv;
    if (step > 0) recv = group_.recv(incoming, left, kReduceTag);
    partial(block * n, n, sum);  // overlaps the transfer of the running sum
    if (step > 0) {
      recv.wait();
      ops::accumulate(incoming, sum);
    }
    if (step + 1 < p) {
      send.wait();
      send = group_.send(sum, right, kReduceTag);
    }
  }
  send.wait();
}

void TensorParallelGroup::all_reduce(Tensor& data, nn::RowReduce op) const {
  group_.all_reduce(data, op == nn::RowReduce::Max ? ReduceOp::Max : ReduceOp::Sum).wait();
}

void TensorParallelGroup::gather_columns(const Tensor& piece, Tensor& whole) const {
  const int64_t rows = piece.size(0), width = piece.numel() / std::max<int64_t>(rows, 1);
  TITAN_CHECK(whole.numel() == piece.numel() * size() && whole.size(0) == rows)
      << "gather_columns: " << shape_string(piece.shape()) << " pieces into "
      << shape_string(whole.shape());
  TITAN_CHECK(piece.device().is_cpu() && piece.dtype() == DType::F32)
      << "gather_columns: host f32 pieces only, got " << dtype_name(piece.dtype()) << " on "
      << piece.device();
  Tensor stacked = Tensor::empty({size(), rows, width}, DType::F32, piece.device());
  group_.all_gather(piece, stacked).wait();
  const float* s = stacked.data<float>();
  float* w = whole.mutable_data<float>();
  for (int64_t q = 0; q < size(); ++q) {
    for (int64_t row = 0; row < rows; ++row) {
      std::copy_n(s + (q * rows + row) * width, width, w + row * width * size() + q * width);
    }
  }
}

Communicator& TensorParallelGroup::replica_group(int64_t replicas) {
  if (replicas == size()) return group_;
  auto& made = replica_groups_[replicas];
  if (!made) {
    made = group_.split(int(rank() / replicas), int(rank()),
                        group_.name() + " replicas of " + std::to_string(replicas));
  }
  return *made;
}

void TensorParallelGroup::reduce_partial_gradients(const std::vector<nn::Parameter*>& parameters) {
  // The parameters whose gradient is partial, by the group that sums it: one all-reduce of
  // their shard gradients packed together per group.
  std::map<int64_t, std::vector<nn::Parameter*>> by_replicas;
  for (nn::Parameter* p : parameters) {
    const nn::MeshDimPlacement* tp = tp_dim(p->placement());
    if (tp == nullptr) continue;
    if (!tp->shard_dim && sequence_parallel()) by_replicas[size()].push_back(p);
    if (tp->shard_dim && tp->replicas > 1) by_replicas[tp->replicas].push_back(p);
  }
  for (auto& [replicas, params] : by_replicas) {
    int64_t numel = 0;
    for (nn::Parameter* p : params) numel += p->shard_grad().numel();
    if (numel == 0) continue;
    const Device device = params.front()->shard_grad().device();
    Tensor packed = Tensor::empty({numel}, DType::F32, device);
    int64_t offset = 0;
    for (nn::Parameter* p : params) {
      Tensor to = flat_slice(packed, offset, p->shard_grad().numel());
      copy_tensor(p->shard_grad().reshape({p->shard_grad().numel()}), to);
      offset += p->shard_grad().numel();
    }
    replica_group(replicas).all_reduce(packed).wait();
    offset = 0;
    for (nn::Parameter* p : params) {
      Tensor to = p->shard_grad().reshape({p->shard_grad().numel()});
      copy_tensor(flat_slice(packed, offset, to.numel()), to);
      offset += to.numel();
    }
  }
}

bool TensorParallelGroup::counts_in_grad_norm(const nn::Parameter& p) {
  const nn::MeshDimPlacement* tp = tp_dim(p.placement());
  return tp == nullptr || tp->first_holder();
}

}  // namespace titan::distributed

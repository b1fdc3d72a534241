#include "titan/distributed/fsdp.h"

#include <algorithm>

#include "titan/core/copy.h"
#include "titan/ops/cast.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/float8.h"

namespace titan::distributed {
namespace {

// FSDP splits the rows of each parameter's compute piece (its value(): the whole tensor, or
// its tensor-parallel piece), the last split of its placement.
int64_t rows_of(const nn::Parameter& p) { return p.value_shape()[0]; }
int64_t row_numel(const nn::Parameter& p) { return shape_numel(p.value_shape()) / rows_of(p); }

// Rank r's rows of p's compute piece.
nn::Box rows_of_rank(const nn::Parameter& p, int64_t r, int64_t n) {
  return nn::placement_box(p.value_shape(), nn::fsdp_placement(r, n));
}

// p is placed as shard group.rank() of group.size() by FSDP: its Storage split is Shard(0)
// over the group, and no split it computes with comes after it.
void check_placed_for(const nn::Parameter& p, const Communicator& group) {
  const nn::Placement& placement = p.placement();
  const nn::MeshDimPlacement* split = placement.storage_split();
  const auto after_split = split ? placement.dims.begin() + (split - placement.dims.data()) + 1
                                 : placement.dims.end();
  const bool ordered = std::none_of(after_split, placement.dims.end(), [](const auto& d) {
    return d.shard_dim && d.use == nn::SplitUse::Compute;
  });
  const bool placed = group.size() == 1
                          ? split == nullptr
                          : split != nullptr && split->size == group.size() &&
                                split->index == group.rank() && split->shard_dim == 0 &&
                                split->replicas == 1 && ordered;
  TITAN_CHECK(placed) << "FSDP over " << group.name() << " (rank " << group.rank() << " of "
                      << group.size() << "): " << p.name() << " is placed as "
                      << placement.describe();
}

// Elements [offset, offset + numel) of a tensor's flat view (no copy).
Tensor slice(const Tensor& t, int64_t offset, int64_t numel) {
  return t.reshape({t.numel()}).narrow(offset, numel);
}

// Converts to dst's dtype when the two differ (an f32 shard into a bf16 gather input).
void copy_slice(const Tensor& src, int64_t src_offset, Tensor& dst, int64_t dst_offset,
                int64_t numel) {
  if (numel == 0) return;
  Tensor to = slice(dst, dst_offset, numel);
  if (src.dtype() == dst.dtype()) {
    copy_tensor(slice(src, src_offset, numel), to);
  } else {
    ops::cast(slice(src, src_offset, numel), to);
  }
}

void zero_slice(Tensor& t, int64_t offset, int64_t numel) {
  if (numel == 0) return;
  Tensor part = slice(t, offset, numel);
  part.zero_();  // on the tensor's device
}

}  // namespace

FullyShardedDataParallel::FullyShardedDataParallel(std::vector<nn::ParameterUnit> units,
                                                   Communicator& shard_group,
                                                   Communicator& replicate_group,
                                                   config::ReshardAfterForward policy)
    : shard_group_(shard_group), replicate_group_(replicate_group), policy_(policy) {
  const int64_t n = shard_group.size();
  bool have_device = false;
  for (nn::ParameterUnit& spec : units) {
    Unit unit;
    switch (policy) {
      case config::ReshardAfterForward::Default:
        unit.reshard_after_forward = spec.reshard_after_forward_by_default;
        break;
      case config::ReshardAfterForward::Always: unit.reshard_after_forward = true; break;
      case config::ReshardAfterForward::Never: unit.reshard_after_forward = false; break;
    }
    for (const nn::Parameter* p : spec.parameters) {
      check_placed_for(*p, shard_group);
      if (!have_device) {
        device_ = p->device();
        compute_dtype_ = p->compute_dtype();
      }
      have_device = true;
      TITAN_CHECK(p->device() == device_) << "FSDP: " << p->name() << " is on " << p->device()
                                          << ", other parameters on " << device_;
      TITAN_CHECK(p->compute_dtype() == compute_dtype_)
          << "FSDP: " << p->name() << " computes in " << dtype_name(p->compute_dtype())
          << ", other parameters in " << dtype_name(compute_dtype_);
      unit.segment_offsets.push_back(unit.segment_numel);
      unit.full_offsets.push_back(unit.full_numel);
      unit.rank_rows.emplace_back();
      for (int64_t r = 0; r < n; ++r) unit.rank_rows.back().push_back(rows_of_rank(*p, r, n));
      unit.stream.push_back(0);
      unit.gather_offsets.push_back(unit.segment_numel);
      unit.float8_index.push_back(-1);
      unit.segment_numel += nn::rows_per_shard(rows_of(*p), n) * row_numel(*p);
      unit.full_numel += shape_numel(p->value_shape());
    }
    unit.gather_numel[0] = unit.segment_numel;
    unit.spec = std::move(spec);
    units_.push_back(std::move(unit));
  }
}

FullyShardedDataParallel::~FullyShardedDataParallel() = default;

int64_t FullyShardedDataParallel::shard_buffer_bytes(int unit) const {
  return units_.at(size_t(unit)).segment_numel * int64_t(sizeof(float)) +
         (experts_ ? experts_->shard_buffer_bytes(unit) : 0);
}

void FullyShardedDataParallel::record(std::vector<int>& order, int unit) {
  if (std::find(order.begin(), order.end(), unit) == order.end()) order.push_back(unit);
}

void FullyShardedDataParallel::use_float8_all_gather(bool precompute_scales,
                                                     Communicator* tp_group) {
  precompute_float8_scales_ = precompute_scales;
  float8_tp_group_ = tp_group != nullptr && tp_group->size() > 1 ? tp_group : nullptr;
  const int64_t n = shard_group_.size();
  for (Unit& unit : units_) {
    unit.gather_numel[0] = unit.gather_numel[1] = 0;
    unit.float8_count = 0;
    for (size_t k = 0; k < unit.spec.parameters.size(); ++k) {
      const nn::Parameter& p = *unit.spec.parameters[k];
      const int s = p.float8() ? 1 : 0;
      unit.stream[k] = s;
      unit.float8_index[k] = s == 1 ? unit.float8_count++ : -1;
      unit.gather_offsets[k] = unit.gather_numel[s];
      unit.gather_numel[s] += nn::rows_per_shard(rows_of(p), n) * row_numel(p);
    }
  }
}

int64_t FullyShardedDataParallel::float8_weight_count() const {
  int64_t count = 0;
  for (const Unit& unit : units_) count += unit.float8_count;
  return count;
}

void FullyShardedDataParallel::compute_float8_scales(const std::vector<Unit*>& units) {
  int64_t count = 0;
  for (const Unit* unit : units) count += unit->float8_count;
  if (count == 0) return;
  Tensor amax = Tensor::empty({count}, DType::F32, device_);
  int64_t at = 0;
  for (const Unit* unit : units) {
    for (size_t k = 0; k < unit->spec.parameters.size(); ++k) {
      if (unit->stream[k] != 1) continue;
      Tensor one = amax.narrow(at++, 1);
      ops::float8_amax(unit->spec.parameters[k]->shard(), ops::Float8Axis::Tensor, one);
    }
  }
  shard_group_.all_reduce(amax, ReduceOp::Max).wait();
  // Every tp rank holds the same units, so the vectors line up; a weight tp does not split
  // has the same amax on each.
  if (float8_tp_group_ != nullptr) float8_tp_group_->all_reduce(amax, ReduceOp::Max).wait();
  Tensor scales = Tensor::empty({count}, DType::F32, device_);
  ops::float8_scales(amax, DType::F8E4M3, /*power_of_two=*/false, scales);
  at = 0;
  for (Unit* unit : units) {
    unit->float8_scales = scales.narrow(at, unit->float8_count);
    at += unit->float8_count;
  }
}

void FullyShardedDataParallel::precompute_float8_scales() {
  if (!sharded() || !precompute_float8_scales_) return;
  std::vector<Unit*> all;
  for (Unit& unit : units_) all.push_back(&unit);
  compute_float8_scales(all);
}

void FullyShardedDataParallel::start_gather(Unit& unit) {
  MemoryTagScope tag("communication");
  if (unit.float8_count > 0 && !precompute_float8_scales_) compute_float8_scales({&unit});
  unit.gather_input = Tensor::empty({unit.gather_numel[0]}, compute_dtype_, device_);
  if (unit.float8_count > 0) {
    unit.gather_input8 = Tensor::empty({unit.gather_numel[1]}, DType::F8E4M3, device_);
  }
  const int64_t n = shard_group_.size();
  for (size_t k = 0; k < unit.spec.parameters.size(); ++k) {
    const nn::Parameter& p = *unit.spec.parameters[k];
    const int64_t padded = nn::rows_per_shard(rows_of(p), n) * row_numel(p);
    const int64_t held = p.shard().numel();
    const int64_t at = unit.gather_offsets[k];
    Tensor& input = unit.stream[k] == 1 ? unit.gather_input8 : unit.gather_input;
    if (unit.stream[k] == 1) {
      Tensor q = slice(input, at, held);
      ops::float8_quantize(slice(p.shard(), 0, held),
                           unit.float8_scales.narrow(unit.float8_index[k], 1),
                           ops::Float8Axis::Tensor, q);
    } else {
      copy_slice(p.shard(), 0, input, at, held);
    }
    zero_slice(input, at + held, padded - held);
  }
  unit.gathered = Tensor::empty({n * unit.gather_numel[0]}, compute_dtype_, device_);
  unit.gather = shard_group_.all_gather(unit.gather_input, unit.gathered);
  if (unit.float8_count > 0) {
    unit.gathered8 = Tensor::empty({n * unit.gather_numel[1]}, DType::F8E4M3, device_);
    unit.gather8 = shard_group_.all_gather(unit.gather_input8, unit.gathered8);
  }
  unit.status = Status::Gathering;
}

void FullyShardedDataParallel::finish_gather(Unit& unit) {
  unit.gather.wait();
  if (unit.float8_count > 0) unit.gather8.wait();
  const int64_t n = shard_group_.size();
  {
    MemoryTagScope tag("parameters.unsharded");
    unit.full = Tensor::empty({unit.full_numel}, compute_dtype_, device_);
  }
  for (size_t k = 0; k < unit.spec.parameters.size(); ++k) {
    const nn::Parameter& p = *unit.spec.parameters[k];
    const int64_t cols = row_numel(p);
    const int s = unit.stream[k];
    for (int64_t r = 0; r < n; ++r) {
      const nn::Box& box = unit.rank_rows[k][size_t(r)];
      const int64_t from = r * unit.gather_numel[s] + unit.gather_offsets[k];
      const int64_t to = unit.full_offsets[k] + box.offset[0] * cols;
      const int64_t numel = box.extent[0] * cols;
      if (s == 0) {
        copy_slice(unit.gathered, from, unit.full, to, numel);
      } else if (numel > 0) {
        Tensor whole = slice(unit.full, to, numel);
        ops::float8_dequantize(slice(unit.gathered8, from, numel),
                               unit.float8_scales.narrow(unit.float8_index[k], 1),
                               ops::Float8Axis::Tensor, whole);
      }
    }
  }
  unit.gathered = unit.gathered8 = Tensor();
  unit.gather_input = unit.gather_input8 = Tensor();
  unit.status = Status::Gathered;
}

void FullyShardedDataParallel::ensure_gathered(Unit& unit) {
  if (unit.status == Status::Sharded) start_gather(unit);
  if (unit.status == Status::Gathering) finish_gather(unit);
}

void FullyShardedDataParallel::bind(Unit& unit) {
  for (size_t k = 0; k < unit.spec.parameters.size(); ++k) {
    nn::Parameter& p = *unit.spec.parameters[k];
    const int64_t numel = shape_numel(p.value_shape());
    Tensor value, grad;
    if (unit.full.defined()) {
      value = slice(unit.full, unit.full_offsets[k], numel).reshape(p.value_shape());
    }
    if (unit.full_grad.defined()) {
      grad = slice(unit.full_grad, unit.full_offsets[k], numel).reshape(p.value_shape());
    }
    p.bind_full(value, grad);
    p.set_float8_precast(value.defined() && unit.stream[k] == 1);
  }
}

void FullyShardedDataParallel::release(Unit& unit) {
  if (unit.status == Status::Gathering) finish_gather(unit);  // a prefetch nobody used
  for (nn::Parameter* p : unit.spec.parameters) p->release_full();
  unit.full = Tensor();
  unit.full_grad = Tensor();
  unit.status = Status::Sharded;
}

void FullyShardedDataParallel::release_values(Unit& unit) {
  // A split backward's weight half (after_backward still to come) may read them.
  if (unit.backwards_open > 0) return;
  if (!unit.full_grad.defined()) return release(unit);
  if (unit.status == Status::Gathering) finish_gather(unit);
  unit.full = Tensor();
  unit.status = Status::Sharded;
  bind(unit);  // the gradient alone
}

void FullyShardedDataParallel::prefetch_after(const std::vector<int>& order, int unit,
                                              bool backward) {
  const auto at = std::find(order.begin(), order.end(), unit);
  if (at == order.end() || at + 1 == order.end()) return;
  Unit& next = units_[size_t(*(at + 1))];
  if (next.status != Status::Sharded) return;
  if (backward && !next.spec.needs_values_in_backward) return;
  start_gather(next);
}

void FullyShardedDataParallel::before_forward(int u) {
  if (!units_.at(size_t(u)).spec.parameters.empty()) own_before_forward(u);
  if (experts_) experts_->before_forward(u);
}

void FullyShardedDataParallel::after_forward(int u) {
  if (!units_.at(size_t(u)).spec.parameters.empty()) own_after_forward(u);
  if (experts_) experts_->after_forward(u);
}

void FullyShardedDataParallel::before_backward(int u) {
  if (!units_.at(size_t(u)).spec.parameters.empty()) own_before_backward(u);
  if (experts_) experts_->before_backward(u);
}

void FullyShardedDataParallel::after_backward(int u) {
  if (!units_.at(size_t(u)).spec.parameters.empty()) own_after_backward(u);
  if (experts_) experts_->after_backward(u);
}

void FullyShardedDataParallel::unshard(int u) {
  if (!units_.at(size_t(u)).spec.parameters.empty()) own_unshard(u);
  if (experts_) experts_->unshard(u);
}

void FullyShardedDataParallel::reduce_and_reshard(int u) {
  if (!units_.at(size_t(u)).spec.parameters.empty()) own_reduce_and_reshard(u);
  if (experts_) experts_->reduce_and_reshard(u);
}

void FullyShardedDataParallel::reshard(int u) {
  if (!units_.at(size_t(u)).spec.parameters.empty()) own_reshard(u);
  if (experts_) experts_->reshard(u);
}

void FullyShardedDataParallel::own_before_forward(int u) {
  if (!sharded()) return;
  Unit& unit = units_.at(size_t(u));
  record(forward_order_, u);
  ensure_gathered(unit);
  bind(unit);
  if (!schedule_driven_) prefetch_after(forward_order_, u, false);
}

void FullyShardedDataParallel::own_after_forward(int u) {
  if (!sharded()) return;
  Unit& unit = units_.at(size_t(u));
  if (schedule_driven_) {
    if (policy_ == config::ReshardAfterForward::Always) release_values(unit);
  } else if (unit.reshard_after_forward) {
    release(unit);
  }
}

void FullyShardedDataParallel::own_before_backward(int u) {
  if (!sharded()) return;
  Unit& unit = units_.at(size_t(u));
  record(backward_order_, u);
  if (unit.spec.needs_values_in_backward) ensure_gathered(unit);
  if (!schedule_driven_ || !unit.full_grad.defined()) {
    MemoryTagScope tag("gradients.unsharded");
    unit.full_grad = Tensor::zeros({unit.full_numel}, DType::F32, device_);
  }
  bind(unit);
  ++unit.backwards_open;
  if (!schedule_driven_) prefetch_after(backward_order_, u, true);
}

void FullyShardedDataParallel::own_after_backward(int u) {
  if (!sharded()) return;
  --units_.at(size_t(u)).backwards_open;
  if (!schedule_driven_) reduce_scatter_and_release(u);
}

void FullyShardedDataParallel::own_unshard(int u) {
  if (!sharded()) return;
  Unit& unit = units_.at(size_t(u));
  if (unit.status == Status::Sharded) start_gather(unit);
}

void FullyShardedDataParallel::own_reduce_and_reshard(int u) {
  if (!sharded()) return;
  if (units_.at(size_t(u)).full_grad.defined()) {
    reduce_scatter_and_release(u);
  } else {
    release(units_[size_t(u)]);
  }
}

void FullyShardedDataParallel::own_reshard(int u) {
  if (sharded()) release_values(units_.at(size_t(u)));
}

void FullyShardedDataParallel::reduce_scatter_and_release(int u) {
  Unit& unit = units_.at(size_t(u));
  TITAN_CHECK(unit.full_grad.defined()) << "FSDP: after_backward(" << unit.spec.name
                                        << ") without before_backward";
  const int64_t n = shard_group_.size();
  MemoryTagScope tag("communication");
  Reduction reduction;
  reduction.unit = u;
  reduction.input = Tensor::empty({n * unit.segment_numel}, DType::F32, device_);
  for (size_t k = 0; k < unit.spec.parameters.size(); ++k) {
    const nn::Parameter& p = *unit.spec.parameters[k];
    const int64_t cols = row_numel(p);
    const int64_t padded = nn::rows_per_shard(rows_of(p), n) * cols;
    for (int64_t r = 0; r < n; ++r) {
      const nn::Box& box = unit.rank_rows[k][size_t(r)];
      const int64_t at = r * unit.segment_numel + unit.segment_offsets[k];
      const int64_t held = box.extent[0] * cols;
      copy_slice(unit.full_grad, unit.full_offsets[k] + box.offset[0] * cols, reduction.input, at,
                 held);
      zero_slice(reduction.input, at + held, padded - held);
    }
  }
  reduction.output = Tensor::empty({unit.segment_numel}, DType::F32, device_);
  reduction.work = shard_group_.reduce_scatter(reduction.input, reduction.output);
  release(unit);
  reductions_.push_back(std::move(reduction));
  // Two in flight at most: the newest overlaps the next unit's backward, and the buffers
  // of older ones do not pile up.
  while (reductions_.size() > 2) {
    complete_reduction(reductions_.front());
    reductions_.pop_front();
  }
}

void FullyShardedDataParallel::complete_reduction(Reduction& reduction) {
  reduction.work.wait();
  const Unit& unit = units_[size_t(reduction.unit)];
  for (size_t k = 0; k < unit.spec.parameters.size(); ++k) {
    nn::Parameter& p = *unit.spec.parameters[k];
    if (p.shard_grad().numel() == 0) continue;
    Tensor grad = p.shard_grad().reshape({p.shard_grad().numel()});
    ops::accumulate(slice(reduction.output, unit.segment_offsets[k], grad.numel()), grad);
  }
}

void FullyShardedDataParallel::reduce_gradients() {
  if (experts_) experts_->reduce_gradients();
  while (!reductions_.empty()) {
    complete_reduction(reductions_.front());
    reductions_.pop_front();
  }
  if (replicate_group_.size() == 1) return;
  // One all-reduce per unit over the replicas, of its shard gradients packed flat.
  MemoryTagScope tag("communication");
  std::vector<Tensor> packed(units_.size());
  std::vector<Work> works(units_.size());
  for (size_t u = 0; u < units_.size(); ++u) {
    if (units_[u].spec.parameters.empty()) continue;
    int64_t numel = 0;
    for (const nn::Parameter* p : units_[u].spec.parameters) numel += p->shard_grad().numel();
    packed[u] = Tensor::empty({numel}, DType::F32, device_);
    int64_t at = 0;
    for (const nn::Parameter* p : units_[u].spec.parameters) {
      copy_slice(p->shard_grad(), 0, packed[u], at, p->shard_grad().numel());
      at += p->shard_grad().numel();
    }
    works[u] = replicate_group_.all_reduce(packed[u]);
  }
  for (size_t u = 0; u < units_.size(); ++u) {
    works[u].wait();
    int64_t at = 0;
    for (nn::Parameter* p : units_[u].spec.parameters) {
      copy_slice(packed[u], at, p->shard_grad(), 0, p->shard_grad().numel());
      at += p->shard_grad().numel();
    }
  }
}

Tensor gather_parameter(const nn::Parameter& p, Communicator& shard_group) {
  MemoryTagScope tag("communication");
  const Device device = p.device();
  if (!p.placement().sharded()) {
    Tensor whole = Tensor::empty(p.value_shape(), DType::F32, device);
    copy_tensor(p.shard(), whole);
    return whole;
  }
  const int64_t n = shard_group.size(), cols = row_numel(p);
  const int64_t padded = nn::rows_per_shard(rows_of(p), n) * cols;
  Tensor input = Tensor::zeros({padded}, DType::F32, device);
  copy_slice(p.shard(), 0, input, 0, p.shard().numel());
  Tensor gathered = Tensor::empty({n * padded}, DType::F32, device);
  shard_group.all_gather(input, gathered).wait();
  Tensor whole = Tensor::empty(p.value_shape(), DType::F32, device);
  for (int64_t r = 0; r < n; ++r) {
    const nn::Box box = rows_of_rank(p, r, n);
    copy_slice(gathered, r * padded, whole, box.offset[0] * cols, box.extent[0] * cols);
  }
  return whole;
}

}  // namespace titan::distributed

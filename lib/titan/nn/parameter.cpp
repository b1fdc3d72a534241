#include "titan/nn/parameter.h"

#include <algorithm>

#include "titan/core/copy.h"
#include "titan/core/philox.h"
#include "titan/ops/cast.h"

namespace titan::nn {

int64_t rows_per_shard(int64_t rows, int64_t shards) { return (rows + shards - 1) / shards; }

Box placement_box(const Shape& global_shape, const Placement& placement) {
  TITAN_CHECK(!global_shape.empty()) << "placement_box: a scalar has no rows to shard";
  TITAN_CHECK(placement.shard_count >= 1 && placement.shard_index >= 0 &&
              placement.shard_index < placement.shard_count)
      << "placement: shard " << placement.shard_index << " of " << placement.shard_count;
  Box box{Shape(global_shape.size(), 0), global_shape};
  const int64_t rows = global_shape[0];
  const int64_t per = rows_per_shard(rows, placement.shard_count);
  const int64_t first = std::min(rows, placement.shard_index * per);
  box.offset[0] = first;
  box.extent[0] = std::min(rows, first + per) - first;
  return box;
}

Parameter::Parameter(std::string name, Shape global_shape, InitRule init, Placement placement)
    : name_(std::move(name)),
      global_shape_(std::move(global_shape)),
      init_(init),
      placement_(placement) {
  const Box box = local_box();
  {
    MemoryTagScope tag("parameters");
    shard_ = Tensor::zeros(box.extent, DType::F32, placement_.device);
  }
  {
    MemoryTagScope tag("gradients");
    shard_grad_ = Tensor::zeros(box.extent, DType::F32, placement_.device);
  }
  if (!placement_.sharded()) {
    grad_ = shard_grad_;
    if (compute_dtype() == DType::F32) {
      value_ = shard_;
    } else {
      MemoryTagScope tag("parameters.compute");
      value_ = Tensor::zeros(global_shape_, compute_dtype(), placement_.device);
    }
  }
}

void Parameter::update_compute_copy() {
  if (placement_.sharded() || value_.shares_storage_with(shard_)) return;
  ops::cast(shard_, value_);
}

const Tensor& Parameter::value() const {
  TITAN_CHECK(value_.defined()) << name_ << " is sharded and not gathered: its unit's "
                                << "gatherer must run before the module uses it";
  return value_;
}

Tensor& Parameter::value() {
  return const_cast<Tensor&>(static_cast<const Parameter*>(this)->value());
}

const Tensor& Parameter::grad() const {
  TITAN_CHECK(grad_.defined()) << name_ << " is sharded and its whole gradient is not bound";
  return grad_;
}

Tensor& Parameter::grad() { return const_cast<Tensor&>(static_cast<const Parameter*>(this)->grad()); }

void Parameter::bind_full(Tensor value, Tensor grad) {
  TITAN_CHECK(placement_.sharded()) << name_ << ": only a sharded parameter is bound";
  TITAN_CHECK(!value.defined() || value.shape() == global_shape_)
      << name_ << ": bound value " << shape_string(value.shape()) << ", expected "
      << shape_string(global_shape_);
  TITAN_CHECK(!grad.defined() || grad.shape() == global_shape_)
      << name_ << ": bound gradient " << shape_string(grad.shape()) << ", expected "
      << shape_string(global_shape_);
  TITAN_CHECK((!value.defined() || value.dtype() == compute_dtype()) &&
              (!grad.defined() || grad.dtype() == DType::F32))
      << name_ << ": bound value must be " << dtype_name(compute_dtype())
      << " (the compute dtype) and gradient f32";
  TITAN_CHECK((!value.defined() || value.device() == device()) &&
              (!grad.defined() || grad.device() == device()))
      << name_ << ": bound tensors must be on the parameter's device " << device();
  value_ = std::move(value);
  grad_ = std::move(grad);
}

void Parameter::release_full() {
  if (!placement_.sharded()) return;
  value_ = Tensor();
  grad_ = Tensor();
}

void Parameter::initialize(uint64_t seed) {
  const Box box = local_box();
  TITAN_CHECK(box.extent.size() >= 1 && box.extent.size() <= 2)
      << name_ << ": initialize handles 1-D and 2-D parameters, got " << shape_string(box.extent);
  if (shard_.numel() == 0) return;  // an empty shard (more ranks than rows): no compute copy
  // Philox fills host memory; a device parameter is filled in a host copy, then copied over.
  Tensor host = shard_;
  if (!device().is_cpu()) {
    MemoryTagScope tag("parameters");
    host = Tensor::empty(shard_.shape(), DType::F32);
  }
  const uint64_t stream = philox_stream_key(name_);
  // The box's elements are drawn at their global flat indices, which is what makes every
  // layout agree. A box of whole rows (every dim-0 split) is one contiguous run of them.
  const bool two_d = box.extent.size() == 2;
  const int64_t rows = two_d ? box.extent[0] : 1;
  const int64_t cols = two_d ? box.extent[1] : box.extent[0];
  const int64_t global_cols = two_d ? global_shape_[1] : global_shape_[0];
  const int64_t row0 = two_d ? box.offset[0] : 0;
  const int64_t col0 = two_d ? box.offset[1] : box.offset[0];
  const bool whole_rows = cols == global_cols;
  Tensor runs = whole_rows ? host.reshape({1, rows * cols}) : host.reshape({rows, cols});
  for (int64_t r = 0; r < runs.size(0); ++r) {
    Tensor run = runs.narrow(r, 1);
    const int64_t first = (row0 + r) * global_cols + col0;
    const float s = float(init_.std), cut = float(init_.cutoff);
    switch (init_.kind) {
      case InitKind::Ones: {
        float* p = run.mutable_data<float>();
        for (int64_t c = 0; c < run.numel(); ++c) p[c] = 1.0f;
        break;
      }
      case InitKind::Normal: philox_fill_normal(run, seed, stream, first, 0.0f, s); break;
      case InitKind::TruncatedNormal:
        philox_fill_trunc_normal(run, seed, stream, first, 0.0f, s, -cut, cut);
        break;
    }
  }
  if (!host.shares_storage_with(shard_)) copy_tensor(host, shard_);
  update_compute_copy();
}

}  // namespace titan::nn

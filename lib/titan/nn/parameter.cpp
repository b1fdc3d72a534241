#include "titan/nn/parameter.h"

#include <algorithm>

#include "titan/core/allocator.h"
#include "titan/core/copy.h"
#include "titan/core/philox.h"
#include "titan/ops/cast.h"

namespace titan::nn {

Parameter::Parameter(std::string name, Shape global_shape, InitRule init, Placement placement)
    : name_(std::move(name)),
      global_shape_(std::move(global_shape)),
      value_shape_(compute_box(global_shape_, placement).extent),
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
      value_ = Tensor::zeros(value_shape_, compute_dtype(), placement_.device);
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
  TITAN_CHECK(!value.defined() || value.shape() == value_shape_)
      << name_ << ": bound value " << shape_string(value.shape()) << ", expected "
      << shape_string(value_shape_);
  TITAN_CHECK(!grad.defined() || grad.shape() == value_shape_)
      << name_ << ": bound gradient " << shape_string(grad.shape()) << ", expected "
      << shape_string(value_shape_);
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
  float8_precast_ = false;
}

void Parameter::initialize(uint64_t seed) {
  const Box box = local_box();
  if (shard_.numel() == 0) return;  // an empty shard (more ranks than rows): no compute copy
  if (counting_mode()) return;       // a dry run: values mean nothing
  // Philox fills host memory; a device parameter is filled in a host copy, then copied over.
  Tensor host = shard_;
  if (!device().is_cpu()) {
    MemoryTagScope tag("parameters");
    host = Tensor::empty(shard_.shape(), DType::F32);
  }
  const uint64_t stream = philox_stream_key(name_);
  const float s = float(init_.std), cut = float(init_.cutoff);
  // The box's elements are drawn at their global flat indices, which is what makes every
  // layout agree; a box of whole rows (every dim-0 split) is one run of them.
  Tensor flat = host.reshape({host.numel()});
  for_each_box_run(global_shape_, box, [&](int64_t global, int64_t local, int64_t length) {
    Tensor run = flat.narrow(local, length);
    switch (init_.kind) {
      case InitKind::Ones: {
        float* p = run.mutable_data<float>();
        for (int64_t c = 0; c < length; ++c) p[c] = 1.0f;
        break;
      }
      case InitKind::Normal: philox_fill_normal(run, seed, stream, global, 0.0f, s); break;
      case InitKind::TruncatedNormal:
        philox_fill_trunc_normal(run, seed, stream, global, 0.0f, s, -cut, cut);
        break;
    }
  });
  if (!host.shares_storage_with(shard_)) copy_tensor(host, shard_);
  update_compute_copy();
}

}  // namespace titan::nn

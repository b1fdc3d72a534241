// The f32 staging of ops/cpu/bf16_storage.h: conversions through the CPU cast (exact
// widening, one round-to-nearest-even narrowing).
#include "titan/ops/cpu/bf16_storage.h"

#include "titan/ops/cast.h"

namespace titan::ops::cpu {

F32Input::F32Input(const Tensor& t) : f32_(t) {
  if (!t.defined() || t.dtype() == DType::F32) return;
  f32_ = Tensor::empty(t.shape(), DType::F32, t.device());
  cast(t, f32_);
}

F32Output::F32Output(Tensor& t, bool reads_old) : target_(&t), f32_(t) {
  if (!t.defined() || t.dtype() == DType::F32) return;
  f32_ = Tensor::empty(t.shape(), DType::F32, t.device());
  if (reads_old) cast(t, f32_);
}

void F32Output::store() {
  if (f32_.defined() && target_->dtype() != DType::F32) cast(f32_, *target_);
}

}  // namespace titan::ops::cpu

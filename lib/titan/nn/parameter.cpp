#include "titan/nn/parameter.h"

#include "titan/core/philox.h"

namespace titan::nn {

Parameter::Parameter(std::string name, Shape global_shape, InitRule init)
    : name_(std::move(name)), global_shape_(std::move(global_shape)), init_(init) {
  const Box box = local_box();
  value_ = Tensor::zeros(box.extent, DType::F32);
  grad_ = Tensor::zeros(box.extent, DType::F32);
}

Box Parameter::local_box() const { return Box{Shape(global_shape_.size(), 0), global_shape_}; }

void Parameter::initialize(uint64_t seed) {
  const Box box = local_box();
  TITAN_CHECK(box.extent.size() >= 1 && box.extent.size() <= 2)
      << name_ << ": initialize handles 1-D and 2-D parameters, got " << shape_string(box.extent);
  const uint64_t stream = philox_stream_key(name_);
  // The box's elements are drawn at their global flat indices, which is what makes every
  // layout agree. A box of whole rows (every dim-0 split) is one contiguous run of them.
  const int64_t rows = box.extent.size() == 2 ? box.extent[0] : 1;
  const int64_t cols = box.extent.back();
  const int64_t global_cols = global_shape_.back();
  const int64_t row0 = box.extent.size() == 2 ? box.offset[0] : 0;
  const int64_t col0 = box.offset.back();
  const bool whole_rows = cols == global_cols;
  Tensor runs = whole_rows ? value_.reshape({1, rows * cols}) : value_.reshape({rows, cols});
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
}

}  // namespace titan::nn

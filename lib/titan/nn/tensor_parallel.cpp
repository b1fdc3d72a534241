#include "titan/nn/tensor_parallel.h"

#include "titan/core/copy.h"
#include "titan/core/error.h"
#include "titan/ops/elementwise.h"

namespace titan::nn {
namespace {

class OneRank final : public TensorParallel {
 public:
  int64_t size() const override { return 1; }
  int64_t rank() const override { return 0; }
  bool sequence_parallel() const override { return false; }
  bool loss_parallel() const override { return false; }

  void gather_rows(const Tensor& x, Tensor& full, const UseRows& use) const override {
    full = x;
    use(x, 0);
  }
  void reduce_rows(Tensor& y, int64_t rows, const PartialRows& partial) const override {
    TITAN_CHECK(y.size(0) == rows) << "reduce_rows: " << rows << " rows into "
                                   << shape_string(y.shape());
    partial(0, rows, y);
  }
  void all_reduce(Tensor&, RowReduce) const override {}
  void gather_columns(const Tensor& piece, Tensor& whole) const override {
    copy_tensor(piece, whole);
  }
};

}  // namespace

const TensorParallel& no_tensor_parallel() {
  static const OneRank one_rank;
  return one_rank;
}

void reduce_rows_into(const TensorParallel& tp, Tensor& y, int64_t rows,
                      ops::Accumulate accumulate, const PartialRows& partial) {
  if (accumulate == ops::Accumulate::No) return tp.reduce_rows(y, rows, partial);
  Tensor sum = Tensor::empty(y.shape(), y.dtype(), y.device());
  tp.reduce_rows(sum, rows, partial);
  ops::accumulate(sum, y);
}

}  // namespace titan::nn

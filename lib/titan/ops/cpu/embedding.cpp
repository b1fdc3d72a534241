// Embedding on the CPU. The forward copies rows in parallel. The backward scatters rows
// into the table gradient; two tokens with the same id would race if threads split
// tokens, so threads split the D columns instead: every thread walks all tokens in order
// over its own columns, which is race-free and gives the same sums for any thread count.
#include <algorithm>
#include <cstring>

#include "titan/ops/embedding.h"

namespace titan::ops::cpu {
namespace {

int64_t id_at(const Tensor& ids, int64_t n) {
  return ids.dtype() == DType::I64 ? ids.data<int64_t>()[n] : int64_t(ids.data<int32_t>()[n]);
}

void check_ids(const Tensor& ids, int64_t vocab, const char* op) {
  TITAN_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64)
      << op << ": ids must be i32 or i64, got " << dtype_name(ids.dtype());
  TITAN_CHECK(ids.dim() == 1) << op << ": ids must be [N], got " << shape_string(ids.shape());
  for (int64_t n = 0; n < ids.numel(); ++n) {
    const int64_t id = id_at(ids, n);
    TITAN_CHECK(id >= 0 && id < vocab) << op << ": token id " << id << " at position " << n
                                       << " is outside the vocabulary [0, " << vocab << ")";
  }
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  check_dtype(table, DType::F32, "embedding_forward", "table");
  TITAN_CHECK(table.dim() == 2) << "embedding_forward: table must be [V, D]";
  check_ids(ids, table.size(0), "embedding_forward");
  const int64_t N = ids.numel(), D = table.size(1);
  check_shape(out, {N, D}, "embedding_forward", "out");
  const float* tp = table.data<float>();
  float* op = out.mutable_data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    std::memcpy(op + n * D, tp + id_at(ids, n) * D, size_t(D) * sizeof(float));
  }
}

void embedding_backward_weight(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  check_dtype(dtable, DType::F32, "embedding_backward_weight", "dtable");
  TITAN_CHECK(dtable.dim() == 2) << "embedding_backward_weight: dtable must be [V, D]";
  check_ids(ids, dtable.size(0), "embedding_backward_weight");
  const int64_t N = ids.numel(), D = dtable.size(1);
  check_shape(dout, {N, D}, "embedding_backward_weight", "dout");
  const float* gp = dout.data<float>();
  float* dp = dtable.mutable_data<float>();
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static)
  for (int64_t d0 = 0; d0 < D; d0 += kBlock) {
    const int64_t d1 = std::min(D, d0 + kBlock);
    for (int64_t n = 0; n < N; ++n) {
      float* row = dp + id_at(ids, n) * D;
      const float* g = gp + n * D;
      for (int64_t d = d0; d < d1; ++d) row[d] += g[d];
    }
  }
}

}  // namespace titan::ops::cpu

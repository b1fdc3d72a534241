// Embedding on the CPU. The forward copies rows in parallel. The backward scatters rows
// into the table gradient; two tokens with the same id would race if threads split
// tokens, so threads split the D columns instead: every thread walks all tokens in order
// over its own columns, which is race-free and gives the same sums for any thread count.
// Tables, activations and gradients are f32 or bf16 each (ops/cpu/bf16_storage.h).
#include <algorithm>

#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/embedding.h"

namespace titan::ops::cpu {
namespace {

int64_t id_at(const Tensor& ids, int64_t n) {
  return ids.dtype() == DType::I64 ? ids.data<int64_t>()[n] : int64_t(ids.data<int32_t>()[n]);
}

// Every id in [0, V): reading them is cheap here, and a bad one would read past the table.
void check_id_values(const Tensor& ids, int64_t vocab, const char* op) {
  for (int64_t n = 0; n < ids.numel(); ++n) {
    const int64_t id = id_at(ids, n);
    TITAN_CHECK(id >= 0 && id < vocab) << op << ": token id " << id << " at position " << n
                                       << " is outside the vocabulary [0, " << vocab << ")";
  }
}

// The rows [first_id, first_id + rows) of a table: the whole table from first_id 0.
struct TableSlice {
  int64_t first_id = 0;
  int64_t rows = 0;
  bool holds(int64_t id) const { return id >= first_id && id < first_id + rows; }
};

void slice_forward(const Tensor& ids, const Tensor& table, TableSlice slice, Tensor& out) {
  const int64_t N = ids.numel(), D = table.size(1);
  visit_storage(table, [&](const auto* tp) {
    visit_storage(out, [&](auto* op) {
#pragma omp parallel for schedule(static) if (worth_threads(N * D))
      for (int64_t n = 0; n < N; ++n) {
        const int64_t id = id_at(ids, n);
        if (slice.holds(id)) {
          const auto* row = tp + (id - slice.first_id) * D;
          for (int64_t d = 0; d < D; ++d) store(op, n * D + d, load(row, d));
        } else {
          for (int64_t d = 0; d < D; ++d) store(op, n * D + d, 0.0f);
        }
      }
    });
  });
}

void slice_backward_weight(const Tensor& ids, const Tensor& dout, TableSlice slice,
                           Tensor& dtable) {
  const int64_t N = ids.numel(), D = dtable.size(1);
  constexpr int64_t kBlock = 64;
  visit_storage(dout, [&](const auto* gp) {
    visit_storage(dtable, [&](auto* dp) {
#pragma omp parallel for schedule(static) if (worth_threads(N * D))
      for (int64_t d0 = 0; d0 < D; d0 += kBlock) {
        const int64_t d1 = std::min(D, d0 + kBlock);
        for (int64_t n = 0; n < N; ++n) {
          const int64_t id = id_at(ids, n);
          if (!slice.holds(id)) continue;
          auto* row = dp + (id - slice.first_id) * D;
          const auto* g = gp + n * D;
          for (int64_t d = d0; d < d1; ++d) store(row, d, load(row, d) + load(g, d));
        }
      }
    });
  });
}

void check_first_id(int64_t first_id, const char* op) {
  TITAN_CHECK(first_id >= 0) << op << ": first_id " << first_id << " is negative";
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  check_embedding_forward(ids, table, out, kFloatDTypes);
  check_id_values(ids, table.size(0), "embedding_forward");
  slice_forward(ids, table, {0, table.size(0)}, out);
}

void embedding_backward_weight(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  check_embedding_backward_weight(ids, dout, dtable, kFloatDTypes);
  check_id_values(ids, dtable.size(0), "embedding_backward_weight");
  slice_backward_weight(ids, dout, {0, dtable.size(0)}, dtable);
}

void embedding_slice_forward(const Tensor& ids, const Tensor& table, int64_t first_id,
                             Tensor& out) {
  check_embedding_forward(ids, table, out, kFloatDTypes);
  check_first_id(first_id, "embedding_slice_forward");
  slice_forward(ids, table, {first_id, table.size(0)}, out);
}

void embedding_slice_backward_weight(const Tensor& ids, const Tensor& dout, int64_t first_id,
                                     Tensor& dtable) {
  check_embedding_backward_weight(ids, dout, dtable, kFloatDTypes);
  check_first_id(first_id, "embedding_slice_backward_weight");
  slice_backward_weight(ids, dout, {first_id, dtable.size(0)}, dtable);
}

}  // namespace titan::ops::cpu

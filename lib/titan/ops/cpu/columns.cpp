// Column slices on the CPU: rows split over threads, each row copied or summed in order.
// src and dst share one storage type (f32 or bf16: sums in f32, rounded once per element).
#include <algorithm>
#include <type_traits>

#include "titan/core/threads.h"
#include "titan/ops/columns.h"
#include "titan/ops/cpu/bf16_storage.h"

namespace titan::ops::cpu {

void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                  int64_t width, Accumulate accumulate) {
  check_copy_columns(src, src_col, dst, dst_col, width, kFloatDTypes);
  const int64_t cs = src.size(src.dim() - 1), cd = dst.size(dst.dim() - 1), R = src.numel() / cs;
  const bool add = accumulate == Accumulate::Yes;
  visit_storage(dst, [&](auto* d) {
    const auto* s = src.data<std::remove_pointer_t<decltype(d)>>();
#pragma omp parallel for schedule(static) if (worth_threads(R * width))
    for (int64_t r = 0; r < R; ++r) {
      const auto* from = s + r * cs + src_col;
      auto* to = d + r * cd + dst_col;
      if (add) {
        for (int64_t j = 0; j < width; ++j) store(to, j, load(to, j) + load(from, j));
      } else {
        std::copy(from, from + width, to);
      }
    }
  });
}

void broadcast_columns(const Tensor& src, Tensor& dst, int64_t dst_col) {
  check_broadcast_columns(src, dst, dst_col, kFloatDTypes, "broadcast_columns");
  const int64_t w = src.size(src.dim() - 1), R = src.numel() / w;
  const int64_t cd = dst.size(dst.dim() - 1), G = dst.numel() / cd / R;
  visit_storage(dst, [&](auto* d) {
    const auto* s = src.data<std::remove_pointer_t<decltype(d)>>();
#pragma omp parallel for schedule(static) if (worth_threads(R * G * w))
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t g = 0; g < G; ++g) {
        std::copy(s + r * w, s + r * w + w, d + (r * G + g) * cd + dst_col);
      }
    }
  });
}

void sum_column_groups(const Tensor& src, int64_t src_col, Tensor& dst) {
  check_broadcast_columns(dst, src, src_col, kFloatDTypes, "sum_column_groups");
  const int64_t w = dst.size(dst.dim() - 1), R = dst.numel() / w;
  const int64_t cs = src.size(src.dim() - 1), G = src.numel() / cs / R;
  visit_storage(dst, [&](auto* d) {
    const auto* s = src.data<std::remove_pointer_t<decltype(d)>>();
#pragma omp parallel for schedule(static) if (worth_threads(R * G * w))
    for (int64_t r = 0; r < R; ++r) {
      auto* to = d + r * w;
      for (int64_t j = 0; j < w; ++j) {  // the groups' sum in f32 in group order, rounded once
        float sum = 0.0f;
        for (int64_t g = 0; g < G; ++g) sum += load(s + (r * G + g) * cs + src_col, j);
        store(to, j, sum);
      }
    }
  });
}

}  // namespace titan::ops::cpu

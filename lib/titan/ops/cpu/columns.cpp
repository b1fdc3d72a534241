// Column slices on the CPU: rows split over threads, each row copied or summed in order.
#include <algorithm>

#include "titan/core/threads.h"
#include "titan/ops/columns.h"

namespace titan::ops::cpu {

void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                  int64_t width, Accumulate accumulate) {
  check_copy_columns(src, src_col, dst, dst_col, width, kFloatDTypes);
  const int64_t cs = src.size(src.dim() - 1), cd = dst.size(dst.dim() - 1), R = src.numel() / cs;
  const float* s = src.data<float>();
  float* d = dst.mutable_data<float>();
  const bool add = accumulate == Accumulate::Yes;
#pragma omp parallel for schedule(static) if (worth_threads(R * width))
  for (int64_t r = 0; r < R; ++r) {
    const float* from = s + r * cs + src_col;
    float* to = d + r * cd + dst_col;
    if (add) {
      for (int64_t j = 0; j < width; ++j) to[j] += from[j];
    } else {
      std::copy(from, from + width, to);
    }
  }
}

void broadcast_columns(const Tensor& src, Tensor& dst, int64_t dst_col) {
  check_broadcast_columns(src, dst, dst_col, kFloatDTypes, "broadcast_columns");
  const int64_t w = src.size(src.dim() - 1), R = src.numel() / w;
  const int64_t cd = dst.size(dst.dim() - 1), G = dst.numel() / cd / R;
  const float* s = src.data<float>();
  float* d = dst.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(R * G * w))
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      std::copy(s + r * w, s + r * w + w, d + (r * G + g) * cd + dst_col);
    }
  }
}

void sum_column_groups(const Tensor& src, int64_t src_col, Tensor& dst) {
  check_broadcast_columns(dst, src, src_col, kFloatDTypes, "sum_column_groups");
  const int64_t w = dst.size(dst.dim() - 1), R = dst.numel() / w;
  const int64_t cs = src.size(src.dim() - 1), G = src.numel() / cs / R;
  const float* s = src.data<float>();
  float* d = dst.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(R * G * w))
  for (int64_t r = 0; r < R; ++r) {
    float* to = d + r * w;
    std::fill(to, to + w, 0.0f);
    for (int64_t g = 0; g < G; ++g) {
      const float* from = s + (r * G + g) * cs + src_col;
      for (int64_t j = 0; j < w; ++j) to[j] += from[j];
    }
  }
}

}  // namespace titan::ops::cpu

// Column slices of row tensors: what multi-head latent attention (nn/latent_attention.h)
// needs to split a projection into its parts and put heads together, since views are only
// reshapes and row ranges. Every tensor is viewed as [rows, last dim].
//
//   copy_columns(src, s, dst, d, w)       dst[r, d + j] (= or +=) src[r, s + j], j < w
//   broadcast_columns(src, dst, d)        dst[r G + g, d + j] = src[r, j]   (src [R, w],
//                                         dst [R G, C]: one row of src to G rows of dst)
//   sum_column_groups(src, s, dst)        dst[r, j] = sum over g < G, in order, of
//                                         src[r G + g, s + j]   (broadcast_columns' backward)
// f32 or bf16 (src and dst of one dtype), on the CPU and the GPU.
#pragma once

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

// The checks every backend makes first (ops/columns.cpp).
void check_copy_columns(const Tensor& src, int64_t src_col, const Tensor& dst, int64_t dst_col,
                        int64_t width, FloatDTypes accepted);
void check_broadcast_columns(const Tensor& src, const Tensor& dst, int64_t dst_col,
                             FloatDTypes accepted, const char* op);

namespace cpu {
void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                  int64_t width, Accumulate accumulate);
void broadcast_columns(const Tensor& src, Tensor& dst, int64_t dst_col);
void sum_column_groups(const Tensor& src, int64_t src_col, Tensor& dst);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                  int64_t width, Accumulate accumulate);
void broadcast_columns(const Tensor& src, Tensor& dst, int64_t dst_col);
void sum_column_groups(const Tensor& src, int64_t src_col, Tensor& dst);
}  // namespace cuda
#endif

inline void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col,
                         int64_t width, Accumulate accumulate = Accumulate::No) {
  TITAN_DISPATCH_CPU_CUDA(src, copy_columns, src, src_col, dst, dst_col, width, accumulate);
}
inline void broadcast_columns(const Tensor& src, Tensor& dst, int64_t dst_col) {
  TITAN_DISPATCH_CPU_CUDA(src, broadcast_columns, src, dst, dst_col);
}
inline void sum_column_groups(const Tensor& src, int64_t src_col, Tensor& dst) {
  TITAN_DISPATCH_CPU_CUDA(src, sum_column_groups, src, src_col, dst);
}

}  // namespace titan::ops

// Cast: dst = src, element by element, converted between float formats.
//
//   f32, bf16, f16, f8e4m3, f8e5m2  ->  any of the same
// Shapes: src and dst have the same shape (any rank). Both on the same device.
// Every value of a narrower format is exact in f32, so each pair converts through f32 with
// one rounding at the end: round to nearest even; fp8 saturates finite values to its
// largest finite one, f16 overflows to inf, NaN stays NaN (core/float_formats.h).
// A cast to the same dtype is a copy of the bits. No backward: casts sit outside the
// differentiated graph (mixed precision casts weights before use and gradients after).
//
// The CUDA backend takes every pair too and agrees with the CPU bit for bit (integer
// arithmetic on the bits, not the hardware conversions, whose NaN bits differ); NaN
// becomes the same canonical NaN of the destination format as on the CPU.
#pragma once

#include "titan/ops/dispatch.h"

namespace titan::ops {

// The checks both backends make first (ops/cast.cpp): src and dst defined, of one shape, on
// one device, both of float dtypes.
void check_cast(const Tensor& src, const Tensor& dst);

namespace cpu {
void cast(const Tensor& src, Tensor& dst);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void cast(const Tensor& src, Tensor& dst);
}  // namespace cuda
#endif

inline void cast(const Tensor& src, Tensor& dst) { TITAN_DISPATCH_CPU_CUDA(src, cast, src, dst); }

}  // namespace titan::ops

// Float8 scaled casts: the numerics of Float8 training (docs/float8.md), one definition for
// every backend. A GEMM operand x, viewed as [rows, cols] (its last dim is cols), is cast
// with one scale for the whole tensor, one per row or one per column:
//
//   amax  = max |x| over the scaled group (the tensor, a row, a column); the caller reduces
//           it over every rank that holds a piece of the group
//   s     = fmax / max(amax, 1e-12), computed in double and rounded to f32; recipes with
//           power-of-two scales round s down to a power of two (its mantissa cleared)
//   q     = fp8(x * s): the product in f32, rounded to nearest even, saturated at +-fmax
//   x'    = f32(q) / s: the dequantized value, what the emulated GEMM multiplies
//
// fmax is 448 for f8e4m3 and 57344 for f8e5m2 (core/float_formats.h has the formats).
// A cast GEMM on the CPU is float8_round_trip on its operands, then the f32 GEMM; the GPU
// multiplies q with fp8 tensor cores and applies 1/s after (ops/float8_gemm.h).
//
//   float8_amax(x, axis, amax)                 amax: f32 [1], [rows] or [cols]
//   float8_scales(amax, format, pow2, scale)   scale: f32 like amax, from the rule above
//   float8_round_trip(x, scale, axis, fmt, y)  y = x' (x's shape; may be x itself)
//   float8_quantize(x, scale, axis, q)         q = fp8 of q's dtype (f8e4m3 or f8e5m2)
//   float8_dequantize(q, scale, axis, y)       y = f32(q) / s
// x and y are f32 or bf16 (the cast's product and rounding stay in f32); scale
// sizes must match the axis. The transposed quantize of the backward's operands is in
// ops/float8_gemm.h (GPU only: the CPU never needs the bytes laid out for tensor cores).
#pragma once

#include "titan/ops/dispatch.h"

namespace titan::ops {

enum class Float8Axis {
  Tensor,   // one scale
  Rows,     // scale i for row i: amax over its columns
  Columns,  // scale j for column j: amax over its rows
};
const char* float8_axis_name(Float8Axis axis);

// Largest finite value of f8e4m3 (448) or f8e5m2 (57344).
float float8_max(DType format);
// The scale rule above for one amax, on the host. The CUDA kernels compute the same
// expression (host/device code would need nvcc here; a test compares the two).
float float8_scale(float amax, DType format, bool power_of_two);

// [rows, cols] of the 2-D view, and the number of scales `axis` gives it.
int64_t float8_scale_count(const Tensor& x, Float8Axis axis);

// Checks both backends make first (ops/float8.cpp).
void check_float8_amax(const Tensor& x, Float8Axis axis, const Tensor& amax);
void check_float8_cast(const Tensor& x, const Tensor& scale, Float8Axis axis, const Tensor& out);

namespace cpu {
void float8_amax(const Tensor& x, Float8Axis axis, Tensor& amax);
void float8_scales(const Tensor& amax, DType format, bool power_of_two, Tensor& scale);
void float8_round_trip(const Tensor& x, const Tensor& scale, Float8Axis axis, DType format,
                       Tensor& y);
void float8_quantize(const Tensor& x, const Tensor& scale, Float8Axis axis, Tensor& q);
void float8_dequantize(const Tensor& q, const Tensor& scale, Float8Axis axis, Tensor& y);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void float8_amax(const Tensor& x, Float8Axis axis, Tensor& amax);
void float8_scales(const Tensor& amax, DType format, bool power_of_two, Tensor& scale);
void float8_round_trip(const Tensor& x, const Tensor& scale, Float8Axis axis, DType format,
                       Tensor& y);
void float8_quantize(const Tensor& x, const Tensor& scale, Float8Axis axis, Tensor& q);
void float8_dequantize(const Tensor& q, const Tensor& scale, Float8Axis axis, Tensor& y);
}  // namespace cuda
#endif

inline void float8_amax(const Tensor& x, Float8Axis axis, Tensor& amax) {
  TITAN_DISPATCH_CPU_CUDA(x, float8_amax, x, axis, amax);
}
inline void float8_scales(const Tensor& amax, DType format, bool power_of_two, Tensor& scale) {
  TITAN_DISPATCH_CPU_CUDA(amax, float8_scales, amax, format, power_of_two, scale);
}
inline void float8_round_trip(const Tensor& x, const Tensor& scale, Float8Axis axis,
                              DType format, Tensor& y) {
  TITAN_DISPATCH_CPU_CUDA(x, float8_round_trip, x, scale, axis, format, y);
}
inline void float8_quantize(const Tensor& x, const Tensor& scale, Float8Axis axis, Tensor& q) {
  TITAN_DISPATCH_CPU_CUDA(x, float8_quantize, x, scale, axis, q);
}
inline void float8_dequantize(const Tensor& q, const Tensor& scale, Float8Axis axis,
                              Tensor& y) {
  TITAN_DISPATCH_CPU_CUDA(q, float8_dequantize, q, scale, axis, y);
}

}  // namespace titan::ops

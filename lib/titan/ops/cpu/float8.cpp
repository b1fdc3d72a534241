// Float8 scaled casts on the CPU (ops/float8.h). Rows are the 2-D view's; threads split
// rows, except for per-column amaxes, which each thread reduces over a block of rows and
// combines (max is exact in any order). bf16 tensors run on f32 copies
// (ops/cpu/bf16_storage.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "titan/core/float_formats.h"
#include "titan/core/threads.h"
#include "titan/ops/checks.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/float8.h"

namespace titan::ops::cpu {
namespace {

struct View2d {
  int64_t rows, cols;
};
View2d view_2d(const Tensor& x) {
  const int64_t cols = x.size(-1);
  return {cols == 0 ? 0 : x.numel() / cols, cols};
}

// The scale of element (i, j).
inline float scale_at(const float* scale, Float8Axis axis, int64_t i, int64_t j) {
  return axis == Float8Axis::Tensor ? scale[0] : axis == Float8Axis::Rows ? scale[i] : scale[j];
}

// fp8(x * s) as bits, and back to f32, for one format.
struct E4m3 {
  static uint8_t encode(float v) { return f8e4m3_from_f32(v).bits; }
  static float decode(uint8_t b) { return f32_from_f8e4m3({b}); }
};
struct E5m2 {
  static uint8_t encode(float v) { return f8e5m2_from_f32(v).bits; }
  static float decode(uint8_t b) { return f32_from_f8e5m2({b}); }
};

template <class Format, class Fn>
void for_each_scaled(const Tensor& x, const Tensor& scale, Float8Axis axis, Fn fn) {
  const View2d v = view_2d(x);
  const float* in = x.data<float>();
  const float* s = scale.data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(v.rows * v.cols))
  for (int64_t i = 0; i < v.rows; ++i) {
    for (int64_t j = 0; j < v.cols; ++j) {
      const int64_t at = i * v.cols + j;
      const float sij = scale_at(s, axis, i, j);
      fn(at, Format::encode(in[at] * sij), sij);
    }
  }
}

// f32(fp8(v)) for finite v without the bit encoding: min(|v|, fmax) is rounded to the grid
// of its binade (the smallest normal's below it) by scaling it to [2^M, 2^(M+1)) and
// rounding there with the 2^23 trick (exact: the default rounding mode is to nearest
// even); each scaling is by a power of two, so exact. Equal bit for bit to the encoding
// followed by the decoding (ops_tests check it), and several times faster: the round trip
// is on every converted GEMM's path.
struct FastGrid {
  int man_bits, min_exp;
  float fmax;
  static float power_of_two(int k) {  // 2^k for k in f32's normal range
    const uint32_t bits = uint32_t(k + 127) << 23;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  float round(float v) const {
    const float a = std::min(std::fabs(v), fmax);
    uint32_t bits;
    std::memcpy(&bits, &a, sizeof bits);
    const int e = std::max(int(bits >> 23) - 127, min_exp);
    const float t = a * power_of_two(man_bits - e);  // in [0, 2^(M+1))
    const float r = (t + 8388608.0f) - 8388608.0f;
    return std::copysign(r * power_of_two(e - man_bits), v);
  }
};

template <class Format>
void round_trip(const Tensor& x, const Tensor& scale, Float8Axis axis, Tensor& y,
                const FastGrid& grid) {
  const View2d v = view_2d(x);
  const float* in = x.data<float>();
  const float* s = scale.data<float>();
  float* out = y.mutable_data<float>();
#pragma omp parallel for schedule(static) if (worth_threads(v.rows * v.cols))
  for (int64_t i = 0; i < v.rows; ++i) {
    for (int64_t j = 0; j < v.cols; ++j) {
      const int64_t at = i * v.cols + j;
      const float sij = scale_at(s, axis, i, j);
      const float scaled = in[at] * sij;
      out[at] = (std::isnan(scaled) ? Format::decode(Format::encode(scaled)) : grid.round(scaled)) /
                sij;
    }
  }
}

}  // namespace

void float8_amax(const Tensor& x, Float8Axis axis, Tensor& amax) {
  check_float8_amax(x, axis, amax);
  check_float_dtype(x, kFloatDTypes, "float8_amax", "x");
  if (any_bf16({&x})) return cpu::float8_amax(*F32Input(x), axis, amax);
  const View2d v = view_2d(x);
  const float* in = x.data<float>();
  float* out = amax.mutable_data<float>();
  if (axis == Float8Axis::Rows) {
#pragma omp parallel for schedule(static) if (worth_threads(v.rows * v.cols))
    for (int64_t i = 0; i < v.rows; ++i) {
      float m = 0.0f;
      for (int64_t j = 0; j < v.cols; ++j) m = std::max(m, std::fabs(in[i * v.cols + j]));
      out[i] = m;
    }
    return;
  }
  // Tensor and Columns: a max per column, folded to one for Tensor.
  std::vector<float> columns(size_t(v.cols), 0.0f);
#pragma omp parallel if (worth_threads(v.rows * v.cols))
  {
    std::vector<float> mine(size_t(v.cols), 0.0f);
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < v.rows; ++i) {
      for (int64_t j = 0; j < v.cols; ++j) {
        mine[size_t(j)] = std::max(mine[size_t(j)], std::fabs(in[i * v.cols + j]));
      }
    }
#pragma omp critical
    for (int64_t j = 0; j < v.cols; ++j) {
      columns[size_t(j)] = std::max(columns[size_t(j)], mine[size_t(j)]);
    }
  }
  if (axis == Float8Axis::Columns) {
    std::copy(columns.begin(), columns.end(), out);
  } else {
    out[0] = columns.empty() ? 0.0f : *std::max_element(columns.begin(), columns.end());
  }
}

void float8_scales(const Tensor& amax, DType format, bool power_of_two, Tensor& scale) {
  check_shape(scale, amax.shape(), "float8_scales", "scale");
  TITAN_CHECK(amax.dtype() == DType::F32 && scale.dtype() == DType::F32)
      << "float8_scales: amax and scale must be f32";
  const float* in = amax.data<float>();
  float* out = scale.mutable_data<float>();
  for (int64_t i = 0; i < amax.numel(); ++i) out[i] = float8_scale(in[i], format, power_of_two);
}

void float8_round_trip(const Tensor& x, const Tensor& scale, Float8Axis axis, DType format,
                       Tensor& y) {
  check_float8_cast(x, scale, axis, y);
  check_float_dtype(x, kFloatDTypes, "float8_round_trip", "x");
  check_float_dtype(y, kFloatDTypes, "float8_round_trip", "y");
  if (any_bf16({&x, &y})) {
    F32Output y32(y, false);
    cpu::float8_round_trip(*F32Input(x), scale, axis, format, *y32);
    return y32.store();
  }
  switch (format) {
    case DType::F8E4M3: return round_trip<E4m3>(x, scale, axis, y, FastGrid{3, -6, 448.0f});
    case DType::F8E5M2: return round_trip<E5m2>(x, scale, axis, y, FastGrid{2, -14, 57344.0f});
    default: TITAN_FAIL() << "float8_round_trip: " << dtype_name(format) << " is not float8";
  }
}

void float8_quantize(const Tensor& x, const Tensor& scale, Float8Axis axis, Tensor& q) {
  check_float8_cast(x, scale, axis, q);
  check_float_dtype(x, kFloatDTypes, "float8_quantize", "x");
  if (any_bf16({&x})) return cpu::float8_quantize(*F32Input(x), scale, axis, q);
  uint8_t* out = static_cast<uint8_t*>(q.raw_mutable_data());
  auto store = [out](int64_t at, uint8_t bits, float) { out[at] = bits; };
  switch (q.dtype()) {
    case DType::F8E4M3: return for_each_scaled<E4m3>(x, scale, axis, store);
    case DType::F8E5M2: return for_each_scaled<E5m2>(x, scale, axis, store);
    default: TITAN_FAIL() << "float8_quantize: q is " << dtype_name(q.dtype()) << ", not float8";
  }
}

void float8_dequantize(const Tensor& q, const Tensor& scale, Float8Axis axis, Tensor& y) {
  check_float8_cast(q, scale, axis, y);
  check_float_dtype(y, kFloatDTypes, "float8_dequantize", "y");
  if (any_bf16({&y})) {
    F32Output y32(y, false);
    cpu::float8_dequantize(q, scale, axis, *y32);
    return y32.store();
  }
  const View2d v = view_2d(q);
  const uint8_t* in = static_cast<const uint8_t*>(q.raw_data());
  const float* s = scale.data<float>();
  float* out = y.mutable_data<float>();
  const bool e4m3 = q.dtype() == DType::F8E4M3;
  TITAN_CHECK(e4m3 || q.dtype() == DType::F8E5M2)
      << "float8_dequantize: q is " << dtype_name(q.dtype()) << ", not float8";
#pragma omp parallel for schedule(static) if (worth_threads(v.rows * v.cols))
  for (int64_t i = 0; i < v.rows; ++i) {
    for (int64_t j = 0; j < v.cols; ++j) {
      const int64_t at = i * v.cols + j;
      const float value = e4m3 ? E4m3::decode(in[at]) : E5m2::decode(in[at]);
      out[at] = value / scale_at(s, axis, i, j);
    }
  }
}

}  // namespace titan::ops::cpu

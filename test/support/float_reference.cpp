#include "support/float_reference.h"

#include <algorithm>
#include <cmath>
#include <random>

FloatLayout float_layout_of(titan::DType t) {
  using titan::DType;
  switch (t) {
    case DType::BF16: return {7, -126, 0x1.fep127, false};
    case DType::F16: return {10, -14, 65504.0, false};
    case DType::F8E4M3: return {3, -6, 448.0, true};
    case DType::F8E5M2: return {2, -14, 57344.0, true};
    default: return {23, -126, 0x1.fffffep127, false};
  }
}

double round_to_format(double x, const FloatLayout& f) {
  if (x == 0 || !std::isfinite(x)) return x;
  int e;
  std::frexp(std::fabs(x), &e);  // |x| in [2^(e-1), 2^e)
  const int exponent = std::max(e - 1, f.min_exp);
  const double scaled = std::fabs(x) * std::ldexp(1.0, f.man_bits - exponent);
  double rounded = std::floor(scaled);
  const double fraction = scaled - rounded;
  if (fraction > 0.5 || (fraction == 0.5 && std::fmod(rounded, 2.0) == 1.0)) rounded += 1;
  double value = std::ldexp(rounded, exponent - f.man_bits);
  if (value > f.max) value = f.saturates ? f.max : INFINITY;
  return std::copysign(value, x);
}

titan::Tensor normal_matrix(int64_t rows, int64_t cols, double std, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, std);
  titan::Tensor t = titan::Tensor::empty({rows, cols}, titan::DType::F32);
  float* p = t.mutable_data<float>();
  for (int64_t i = 0; i < rows * cols; ++i) p[i] = float(normal(rng));
  return t;
}

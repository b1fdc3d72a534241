// Float formats in float64, written from their bit layouts (not from core/float_formats.h):
// the independent rounding that the cast and Float8 tests check the library against.
#pragma once

#include <cstdint>

#include "titan/core/tensor.h"

struct FloatLayout {
  int man_bits;     // stored mantissa bits
  int min_exp;      // exponent of the smallest normal
  double max;       // largest finite value
  bool saturates;   // beyond max: max (fp8) or inf
};

FloatLayout float_layout_of(titan::DType t);

// x rounded to the format in float64: scale so the kept bits are the integer part, round
// half to even, scale back. Below the smallest normal the exponent stays at min_exp, which
// is exactly what subnormals are.
double round_to_format(double x, const FloatLayout& f);

// A [rows, cols] f32 host tensor of normal(0, std) values from std::mt19937(seed).
titan::Tensor normal_matrix(int64_t rows, int64_t cols, double std, uint32_t seed);

// The one gradient checker (docs/design.md, "Tests").
//
// An op's backward is checked against central differences of a float64 reference of its
// forward, on a random-projection loss L(x) = sum_k r_k * f_k(x): the analytic gradient
// dL/dx is what the op's backward returns for dy = r. For every checked element
//   |analytic - numeric| <= tolerance * max(|analytic|, |numeric|, 1).
// Big inputs are checked on a fixed sample of elements. Elements near a kink of the
// function (where the derivative jumps) can be skipped by a predicate.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "titan/core/tensor.h"

namespace titan::testing {

using Values = std::vector<double>;

// Random f32 tensor with elements uniform in [-scale, scale), from a fixed seed.
Tensor random_tensor(const Shape& shape, uint64_t seed, float scale = 1.0f);
Values random_values(int64_t n, uint64_t seed, double scale = 1.0);
Values to_values(const Tensor& t);                     // any float dtype -> f64
Tensor from_values(const Values& v, const Shape& shape);  // -> f32

struct GradCheckOptions {
  double tolerance = 2e-3;
  double step = 1e-4;           // relative to max(|x|, 1)
  int64_t max_samples = 64;     // elements checked per input
  // Returns true for an element to skip (input index, element index, value).
  std::function<bool(int, int64_t, double)> near_kink;
};

using ReferenceFunction = std::function<Values(const std::vector<Values>&)>;

// Checks each input i with analytic[i] non-empty; reports failures through GoogleTest,
// printing the first mismatches and the max absolute and relative difference.
void expect_gradients_match(const ReferenceFunction& reference, const std::vector<Values>& inputs,
                            const Values& projection, const std::vector<Values>& analytic,
                            const std::vector<std::string>& names,
                            const GradCheckOptions& options = {});

// Max |a - b| / max(|b|, floor) over all elements, and the index where it happens.
struct Difference {
  double max_abs = 0;
  double max_rel = 0;
  int64_t worst_index = -1;
};
Difference compare(const Values& actual, const Values& expected, double floor = 1.0);

// EXPECT that actual matches expected within tolerance relative to max(|expected|, floor).
void expect_close(const Values& actual, const Values& expected, double tolerance,
                  const std::string& what, double floor = 1.0);

}  // namespace titan::testing

#include "support/gradient_check.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "titan/core/float_formats.h"

namespace titan::testing {

Values random_values(int64_t n, uint64_t seed, double scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-scale, scale);
  Values v(static_cast<size_t>(n));
  for (double& x : v) x = dist(rng);
  return v;
}

Tensor random_tensor(const Shape& shape, uint64_t seed, float scale) {
  const Values v = random_values(shape_numel(shape), seed, scale);
  return from_values(v, shape);
}

Values to_values(const Tensor& t) {
  Values v(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::F32: v[i] = t.data<float>()[i]; break;
      case DType::BF16: v[i] = f32_from_bf16(t.data<bf16_t>()[i]); break;
      case DType::F16: v[i] = f32_from_f16(t.data<f16_t>()[i]); break;
      case DType::I32: v[i] = t.data<int32_t>()[i]; break;
      case DType::I64: v[i] = double(t.data<int64_t>()[i]); break;
      default: ADD_FAILURE() << "to_values: unsupported dtype " << dtype_name(t.dtype()); return v;
    }
  }
  return v;
}

Tensor from_values(const Values& v, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::F32);
  EXPECT_EQ(int64_t(v.size()), t.numel());
  float* p = t.mutable_data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(v[size_t(i)]);
  return t;
}

Difference compare(const Values& actual, const Values& expected, double floor) {
  Difference d;
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    const double abs_diff = std::fabs(actual[i] - expected[i]);
    const double rel = abs_diff / std::max(std::fabs(expected[i]), floor);
    if (!(abs_diff <= d.max_abs)) d.max_abs = abs_diff;  // NaN-propagating
    if (!(rel <= d.max_rel)) {
      d.max_rel = rel;
      d.worst_index = int64_t(i);
    }
  }
  return d;
}

void expect_close(const Values& actual, const Values& expected, double tolerance,
                  const std::string& what, double floor) {
  ASSERT_EQ(actual.size(), expected.size()) << what << ": sizes differ";
  const Difference d = compare(actual, expected, floor);
  if (d.max_rel <= tolerance) return;
  std::ostringstream first;
  for (size_t i = 0; i < std::min<size_t>(4, actual.size()); ++i) {
    first << " [" << i << "] " << actual[i] << " vs " << expected[i];
  }
  ADD_FAILURE() << what << ": max rel diff " << d.max_rel << " (abs " << d.max_abs << ") at index "
                << d.worst_index << ": " << actual[size_t(d.worst_index)] << " vs expected "
                << expected[size_t(d.worst_index)] << " (tolerance " << tolerance << "); first:"
                << first.str();
}

namespace {

double projected(const ReferenceFunction& reference, const std::vector<Values>& inputs,
                 const Values& projection) {
  const Values out = reference(inputs);
  EXPECT_EQ(out.size(), projection.size()) << "reference output size vs projection size";
  double sum = 0;
  for (size_t k = 0; k < std::min(out.size(), projection.size()); ++k) sum += projection[k] * out[k];
  return sum;
}

std::vector<int64_t> sample_indices(int64_t n, int64_t max_samples, uint64_t seed) {
  std::vector<int64_t> idx;
  if (n <= max_samples) {
    for (int64_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  std::mt19937_64 rng(seed);
  idx.push_back(0);
  idx.push_back(n - 1);
  while (int64_t(idx.size()) < max_samples) idx.push_back(int64_t(rng() % uint64_t(n)));
  return idx;
}

}  // namespace

void expect_gradients_match(const ReferenceFunction& reference, const std::vector<Values>& inputs,
                            const Values& projection, const std::vector<Values>& analytic,
                            const std::vector<std::string>& names,
                            const GradCheckOptions& options) {
  ASSERT_EQ(inputs.size(), analytic.size());
  std::vector<Values> x = inputs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (analytic[i].empty()) continue;
    ASSERT_EQ(analytic[i].size(), inputs[i].size()) << names[i] << ": gradient size";
    int failures = 0;
    double worst = 0;
    std::ostringstream report;
    for (int64_t j : sample_indices(int64_t(inputs[i].size()), options.max_samples, 1234 + i)) {
      const double x0 = inputs[i][size_t(j)];
      if (options.near_kink && options.near_kink(int(i), j, x0)) continue;
      const double h = options.step * std::max(1.0, std::fabs(x0));
      x[i][size_t(j)] = x0 + h;
      const double plus = projected(reference, x, projection);
      x[i][size_t(j)] = x0 - h;
      const double minus = projected(reference, x, projection);
      x[i][size_t(j)] = x0;
      const double numeric = (plus - minus) / (2 * h);
      const double a = analytic[i][size_t(j)];
      const double err = std::fabs(a - numeric) / std::max({std::fabs(a), std::fabs(numeric), 1.0});
      worst = std::max(worst, err);
      if (!(err <= options.tolerance)) {
        if (failures < 4) report << "\n  " << names[i] << "[" << j << "]: analytic " << a << ", numeric " << numeric;
        ++failures;
      }
    }
    EXPECT_EQ(failures, 0) << names[i] << ": " << failures << " gradient elements off (worst rel err "
                           << worst << ", tolerance " << options.tolerance << ")" << report.str();
  }
}

}  // namespace titan::testing

// Distributions over Philox blocks (philox.h) and the tensor fills that initialization uses.
//
// Each element reads only its own block, so the fills are embarrassingly parallel and
// deterministic whatever the thread count. Arithmetic is in double: the 53-bit uniforms,
// the logarithm of Box-Muller and the quantile function lose nothing a float would notice,
// and the single rounding to float at the end is the only one.
#include "titan/core/philox.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "titan/core/float_formats.h"

namespace titan {
namespace {

constexpr double kTwoPowMinus52 = 0x1p-52;
constexpr double kTwoPowMinus53 = 0x1p-53;

// The top 53 bits of the 64-bit word (high << 32 | low).
uint64_t bits53(uint32_t high, uint32_t low) { return ((uint64_t(high) << 32) | low) >> 11; }

// [0, 1), 53-bit resolution.
double uniform_closed_open(uint32_t high, uint32_t low) {
  return double(bits53(high, low)) * kTwoPowMinus53;
}
// (0, 1], 53-bit resolution: Box-Muller's log never sees zero.
double uniform_open_closed(uint32_t high, uint32_t low) {
  return double(bits53(high, low) + 1) * kTwoPowMinus53;
}
// (0, 1) strictly, 52-bit resolution: (k + 1/2) * 2^-52 is exact in double, and stays
// away from both ends, so an inverse CDF between two probabilities never lands on either.
double uniform_open_open(uint32_t high, uint32_t low) {
  return (double(bits53(high, low) >> 1) + 0.5) * kTwoPowMinus52;
}

// The unchecked draws; the public functions and the fills validate their arguments once.
float draw_uniform(const PhiloxCounter& block, float low, float high) {
  if (low == high) return low;
  const double u = uniform_closed_open(block[0], block[1]);
  const float value = float(double(low) + (double(high) - double(low)) * u);
  // Rounding to float can reach `high` when u is within half a float ulp of 1.
  return value < high ? value : std::nextafter(high, low);
}

float draw_normal(const PhiloxCounter& block, float mean, float std) {
  const double u1 = uniform_open_closed(block[0], block[1]);
  const double u2 = uniform_closed_open(block[2], block[3]);
  const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  return float(double(mean) + double(std) * z);
}

float draw_trunc_normal(const PhiloxCounter& block, float mean, float std, float a, float b) {
  double alpha = (double(a) - mean) / std;
  double beta = (double(b) - mean) / std;
  // Phi is accurate near 0 and coarse near 1 (a double holds 1 - 1e-17 as 1). When both
  // cut points lie above the mean, draw the mirror image from the lower tail and negate.
  const bool mirrored = alpha > 0;
  if (mirrored) {
    const double lower = -beta;
    beta = -alpha;
    alpha = lower;
  }
  const double p_alpha = normal_cdf(alpha);
  const double p_beta = normal_cdf(beta);
  const double v = uniform_open_open(block[0], block[1]);
  double x = normal_quantile(p_alpha + (p_beta - p_alpha) * v);
  if (mirrored) x = -x;
  // The clamp catches the ends of the quantile's range (+-inf when p rounds to 0 or 1)
  // and the last ulp, as torch's trunc_normal_ does.
  const double value = std::clamp(double(mean) + double(std) * x, double(a), double(b));
  return float(value);  // a and b are floats, so the rounded value stays within them
}

void check_uniform_arguments(float low, float high) {
  TITAN_CHECK(std::isfinite(low) && std::isfinite(high) && low <= high)
      << "uniform: need finite low <= high, got [" << low << ", " << high << ")";
}
void check_normal_arguments(float mean, float std) {
  TITAN_CHECK(std::isfinite(mean) && std::isfinite(std) && std >= 0)
      << "normal: need finite mean and std >= 0, got mean " << mean << ", std " << std;
}
void check_trunc_normal_arguments(float mean, float std, float a, float b) {
  TITAN_CHECK(std::isfinite(mean) && std::isfinite(std) && std > 0)
      << "trunc_normal: need finite mean and std > 0, got mean " << mean << ", std " << std;
  TITAN_CHECK(!std::isnan(a) && !std::isnan(b) && a <= b)
      << "trunc_normal: need cut points a <= b, got [" << a << ", " << b << "]";
}

// Writes draw(block of first_index + k) to element k, rounded to the tensor's dtype.
template <class Storage, class Encode, class Draw>
void fill_as(Tensor& out, uint64_t seed, uint64_t stream, int64_t first_index, Encode encode,
             Draw draw) {
  Storage* data = out.mutable_data<Storage>();
  const int64_t n = out.numel();
  // Small fills stay on one thread: a parallel region costs more than a few thousand draws.
#pragma omp parallel for schedule(static) if (n >= 4096)
  for (int64_t k = 0; k < n; ++k) {
    data[k] = encode(draw(philox_block(seed, stream, first_index + k)));
  }
}

template <class Draw>
void fill(Tensor& out, uint64_t seed, uint64_t stream, int64_t first_index, const char* what,
          Draw draw) {
  TITAN_CHECK(out.defined()) << what << ": output tensor is undefined";
  TITAN_CHECK(out.device().is_cpu()) << what << ": no kernel for " << out.device();
  TITAN_CHECK(first_index >= 0 && first_index <= std::numeric_limits<int64_t>::max() - out.numel())
      << what << ": first_index " << first_index << " with " << out.numel()
      << " elements is outside [0, 2^63)";
  switch (out.dtype()) {
    case DType::F32:
      return fill_as<float>(out, seed, stream, first_index, [](float f) { return f; }, draw);
    case DType::BF16:
      return fill_as<bf16_t>(out, seed, stream, first_index, bf16_from_f32, draw);
    case DType::F16:
      return fill_as<f16_t>(out, seed, stream, first_index, f16_from_f32, draw);
    case DType::F8E4M3:
      return fill_as<f8e4m3_t>(out, seed, stream, first_index, f8e4m3_from_f32, draw);
    case DType::F8E5M2:
      return fill_as<f8e5m2_t>(out, seed, stream, first_index, f8e5m2_from_f32, draw);
    default:
      TITAN_FAIL() << what << ": output must be a float dtype, got " << dtype_name(out.dtype());
  }
}

}  // namespace

double normal_cdf(double x) { return 0.5 * std::erfc(-x * std::numbers::sqrt2 / 2); }

double normal_quantile(double p) {
  if (p == 0) return -std::numeric_limits<double>::infinity();
  if (p == 1) return std::numeric_limits<double>::infinity();
  if (!(p > 0 && p < 1)) return std::numeric_limits<double>::quiet_NaN();
  // Acklam's coefficients: a central rational function in (p - 1/2)^2, and one in
  // sqrt(-2 log p) for each tail below 0.02425 and above 1 - 0.02425.
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                 -2.759285104469687e+02, 1.383577518672690e+02,
                                 -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                 -1.556989798598866e+02, 6.680131188771972e+01,
                                 -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                 -2.400758277161838e+00, -2.549732539343734e+00,
                                 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                                 2.445134137142996e+00, 3.754408661907416e+00};
  constexpr double kTail = 0.02425;
  auto tail = [&](double q) {
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  };
  double x;
  if (p < kTail) {
    x = tail(std::sqrt(-2 * std::log(p)));
  } else if (p > 1 - kTail) {
    x = -tail(std::sqrt(-2 * std::log1p(-p)));
  } else {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  // One Halley step on f(x) = Phi(x) - p: cubic convergence from 1e-9 to rounding level.
  const double error = normal_cdf(x) - p;
  const double u = error * std::sqrt(2 * std::numbers::pi) * std::exp(x * x / 2);
  if (std::isfinite(u)) x -= u / (1 + x * u / 2);  // exp overflows only beyond |x| ~ 37
  return x;
}

float philox_uniform(uint64_t seed, uint64_t stream, int64_t index, float low, float high) {
  check_uniform_arguments(low, high);
  return draw_uniform(philox_block(seed, stream, index), low, high);
}

float philox_normal(uint64_t seed, uint64_t stream, int64_t index, float mean, float std) {
  check_normal_arguments(mean, std);
  return draw_normal(philox_block(seed, stream, index), mean, std);
}

float philox_trunc_normal(uint64_t seed, uint64_t stream, int64_t index, float mean, float std,
                          float a, float b) {
  check_trunc_normal_arguments(mean, std, a, b);
  return draw_trunc_normal(philox_block(seed, stream, index), mean, std, a, b);
}

void philox_fill_uniform(Tensor& out, uint64_t seed, uint64_t stream, int64_t first_index,
                         float low, float high) {
  check_uniform_arguments(low, high);
  fill(out, seed, stream, first_index, "philox_fill_uniform",
       [=](const PhiloxCounter& block) { return draw_uniform(block, low, high); });
}

void philox_fill_normal(Tensor& out, uint64_t seed, uint64_t stream, int64_t first_index,
                        float mean, float std) {
  check_normal_arguments(mean, std);
  fill(out, seed, stream, first_index, "philox_fill_normal",
       [=](const PhiloxCounter& block) { return draw_normal(block, mean, std); });
}

void philox_fill_trunc_normal(Tensor& out, uint64_t seed, uint64_t stream, int64_t first_index,
                              float mean, float std, float a, float b) {
  check_trunc_normal_arguments(mean, std, a, b);
  fill(out, seed, stream, first_index, "philox_fill_trunc_normal",
       [=](const PhiloxCounter& block) { return draw_trunc_normal(block, mean, std, a, b); });
}

}  // namespace titan

// Device-independent parts of ops/rope.h: the frequency table (always made on the CPU)
// and the argument checks both backends make.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "titan/ops/rope.h"

namespace titan::ops {

void rope_table(int64_t head_dim, double theta, const RopeScaling& scaling,
                int64_t first_position, Tensor& freqs) {
  TITAN_CHECK(head_dim > 0 && head_dim % 2 == 0) << "rope_table: head dim " << head_dim << " must be even";
  const int64_t half = head_dim / 2;
  TITAN_CHECK(freqs.dim() == 3 && freqs.size(1) == half && freqs.size(2) == 2)
      << "rope_table: freqs must be [T, " << half << ", 2], got " << shape_string(freqs.shape());
  check_dtype(freqs, DType::F32, "rope_table", "freqs");
  const int64_t T = freqs.size(0);
  float* fp = freqs.mutable_data<float>();
  for (int64_t i = 0; i < half; ++i) {
    // torch: 1.0 / (theta ** (arange(0, hd, 2).float() / hd)), all in float32.
    const float exponent = float(2 * i) / float(head_dim);
    float f = 1.0f / std::pow(float(theta), exponent);
    if (scaling.enabled) {
      const double wavelength = 2.0 * std::numbers::pi / double(f);
      const double L = scaling.original_max_positions;
      if (wavelength > L / scaling.low_freq_factor) {
        f = float(double(f) / scaling.factor);
      } else if (wavelength >= L / scaling.high_freq_factor) {
        const double s = (L / wavelength - scaling.low_freq_factor) /
                         (scaling.high_freq_factor - scaling.low_freq_factor);
        f = float((1.0 - s) * double(f) / scaling.factor + s * double(f));
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      const float angle = float(first_position + t) * f;  // float32, as torch.outer
      fp[(t * half + i) * 2 + 0] = float(std::cos(double(angle)));
      fp[(t * half + i) * 2 + 1] = float(std::sin(double(angle)));
    }
  }
}

void yarn_rope_table(int64_t rope_dim, double theta, const YarnScaling& scaling,
                     int64_t first_position, Tensor& freqs) {
  TITAN_CHECK(rope_dim > 0 && rope_dim % 2 == 0)
      << "yarn_rope_table: dim " << rope_dim << " must be even";
  const int64_t half = rope_dim / 2;
  TITAN_CHECK(freqs.dim() == 3 && freqs.size(1) == half && freqs.size(2) == 2)
      << "yarn_rope_table: freqs must be [T, " << half << ", 2], got "
      << shape_string(freqs.shape());
  check_dtype(freqs, DType::F32, "yarn_rope_table", "freqs");
  double low = 0, high = 0;
  if (scaling.enabled) {
    const auto correction_dim = [&](double rotations) {
      const double wavelengths = scaling.original_seq_len / (rotations * 2 * std::numbers::pi);
      return double(rope_dim) * std::log(wavelengths) / (2 * std::log(theta));
    };
    low = std::max(std::floor(correction_dim(scaling.beta_fast)), 0.0);
    high = std::min(std::ceil(correction_dim(scaling.beta_slow)), double(rope_dim - 1));
    if (low == high) high += 0.001;
  }
  const int64_t T = freqs.size(0);
  float* fp = freqs.mutable_data<float>();
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = float(2 * i) / float(rope_dim);  // float32, as torch
    float f = 1.0f / std::pow(float(theta), exponent);
    if (scaling.enabled) {
      const float ramp =
          std::clamp((float(i) - float(low)) / (float(high) - float(low)), 0.0f, 1.0f);
      const float smooth = 1.0f - ramp;
      f = f / float(scaling.factor) * (1.0f - smooth) + f * smooth;
    }
    for (int64_t t = 0; t < T; ++t) {
      const float angle = float(first_position + t) * f;
      fp[(t * half + i) * 2 + 0] = float(std::cos(double(angle)));
      fp[(t * half + i) * 2 + 1] = float(std::sin(double(angle)));
    }
  }
}

void check_rope(const Tensor& x, const Tensor& freqs, const Tensor& y, FloatDTypes accepted,
                const char* op) {
  check_float_dtype(x, accepted, op, "x");
  TITAN_CHECK(x.dim() == 4) << op << ": x must be [B, T, H, hd], got " << shape_string(x.shape());
  const int64_t T = x.size(1), hd = x.size(3);
  TITAN_CHECK(hd % 2 == 0) << op << ": head dim " << hd << " must be even";
  check_shape(freqs, {T, hd / 2, 2}, op, "freqs");
  check_dtype(freqs, DType::F32, op, "freqs");
  check_shape(y, x.shape(), op, "y");
  check_dtype(y, x.dtype(), op, "y");
}

}  // namespace titan::ops

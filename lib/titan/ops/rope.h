// Rotary position embedding (RoPE) with Llama 3.1's frequency scaling.
//
// Frequencies, one per pair of a head's dims (i < hd/2):
//   f_i = theta^(-2i/hd)                  wavelength w_i = 2 pi / f_i, L = original positions
//   w_i < L/high_freq_factor  -> f_i                 (high frequencies kept)
//   w_i > L/low_freq_factor   -> f_i / factor        (low frequencies stretched)
//   otherwise s = (L/w_i - low)/(high - low), f_i -> (1 - s) f_i / factor + s f_i
// The table holds cos and sin of position * f_i: freqs [T, hd/2, 2], row t for the token
// at position first_position + t. As in torchtitan, f_i and the angles are float32.
//
// Rotation of each adjacent pair (x0, x1) = (x[2i], x[2i+1]) of every head, as a complex
// number times e^{i angle} (torchtitan's interleaved layout):
//   y0 = x0 cos - x1 sin      y1 = x0 sin + x1 cos
// Backward rotates by -angle:
//   dx0 = dy0 cos + dy1 sin   dx1 = -dy0 sin + dy1 cos
// Shapes: x, y, dy, dx [B, T, H, hd]; y may be x (in place). Keeps nothing.
// Both backends take x and y (dy and dx) both f32 or both bf16, and the table in f32 on the
// same device (rope_table fills a CPU tensor: copy it with to_device).
#pragma once

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

struct RopeScaling {
  bool enabled = true;            // torchtitan applies it to every Llama 3 flavor
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_positions = 8192;
};

// Fills freqs [T, hd/2, 2] (f32, CPU) for positions first_position .. first_position+T-1.
void rope_table(int64_t head_dim, double theta, const RopeScaling& scaling,
                int64_t first_position, Tensor& freqs);

// DeepSeek V3's YaRN scaling of the same table (torchtitan's deepseek_v3 precompute), for
// sequences longer than the original ones: with d the rotated dims and
//   cd(r) = d ln(L / (2 pi r)) / (2 ln theta),  low = max(floor(cd(beta_fast)), 0),
//   high = min(ceil(cd(beta_slow)), d - 1)  (high += 0.001 when equal),
//   ramp_i = clamp((i - low) / (high - low), 0, 1),  f_i -> f_i / factor * ramp_i +
//   f_i (1 - ramp_i); enabled only when the training sequence exceeds L.
struct YarnScaling {
  bool enabled = false;
  double factor = 40.0;
  double beta_fast = 32.0, beta_slow = 1.0;
  double original_seq_len = 4096;  // L
};
void yarn_rope_table(int64_t rope_dim, double theta, const YarnScaling& scaling,
                     int64_t first_position, Tensor& freqs);

// The checks both backends make first (ops/rope.cpp), for rope_forward (x, y) and
// rope_backward (dy, dx; named x and y in errors): x [B, T, H, hd] in one of the backend's
// float dtypes with hd even, freqs [T, hd/2, 2] f32, y like x.
void check_rope(const Tensor& x, const Tensor& freqs, const Tensor& y, FloatDTypes accepted,
                const char* op);

namespace cpu {
void rope_forward(const Tensor& x, const Tensor& freqs, Tensor& y);
void rope_backward(const Tensor& dy, const Tensor& freqs, Tensor& dx);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void rope_forward(const Tensor& x, const Tensor& freqs, Tensor& y);
void rope_backward(const Tensor& dy, const Tensor& freqs, Tensor& dx);
}  // namespace cuda
#endif

inline void rope_forward(const Tensor& x, const Tensor& freqs, Tensor& y) {
  TITAN_DISPATCH_CPU_CUDA(x, rope_forward, x, freqs, y);
}
inline void rope_backward(const Tensor& dy, const Tensor& freqs, Tensor& dx) {
  TITAN_DISPATCH_CPU_CUDA(dy, rope_backward, dy, freqs, dx);
}

}  // namespace titan::ops

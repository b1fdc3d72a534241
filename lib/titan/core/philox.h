// Counter-based random numbers: Philox 4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel
// random numbers: as easy as 1, 2, 3", SC'11; the Random123 library).
//
// Why counter-based: docs/design.md ("Placements") makes every initial weight a
// pure function of (seed, parameter name, global element index). A rank that holds rows
// [r0, r1) of a sharded parameter fills exactly those elements, and gets the same bits the
// one-rank run puts there, without generating or seeing the rest. No generator state is
// kept anywhere, so there is nothing to checkpoint and nothing shared between threads.
//
// Addressing one element:
//   key     = (seed low 32 bits, seed high 32 bits)
//   counter = (index low 32, index high 32, stream low 32, stream high 32)
//   stream  = philox_stream_key("layers.3.attention.wq.weight")   (FNV-1a 64 of the name)
// One Philox block (4 words) per element: two 53-bit uniforms, enough for Box-Muller or
// an inverse-CDF draw in double. Every distribution is computed in double and rounded once
// to float (torchtitan samples in fp32, then casts: so do the fills for 16-bit outputs).
//
//   const uint64_t stream = philox_stream_key("tok_embeddings.weight");
//   Tensor piece = Tensor::empty({rows, dim}, DType::F32);
//   philox_fill_normal(piece, seed, stream, first_row * dim, 0.0f, 1.0f);   // rows of a shard
//   philox_fill_trunc_normal(w, seed, philox_stream_key("output.weight"), 0, 0.0f, s, -3*s, 3*s);
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "titan/core/tensor.h"

namespace titan {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// The Philox 4x32 bijection with 10 rounds, exactly as Random123's philox4x32_R(10, ...):
// each round multiplies words 0 and 2 by the two constants, swaps the halves and XORs in
// the key; the key is bumped by the Weyl constants between rounds. Inline and constexpr so
// that the known-answer vectors can be checked at compile time and a device kernel can
// include the same arithmetic.
constexpr PhiloxCounter philox4x32_10(PhiloxCounter counter, PhiloxKey key) {
  constexpr uint64_t kMultiplier0 = 0xD2511F53u;
  constexpr uint64_t kMultiplier1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
  constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kWeyl0;
      key[1] += kWeyl1;
    }
    const uint64_t product0 = kMultiplier0 * counter[0];
    const uint64_t product1 = kMultiplier1 * counter[2];
    counter = {uint32_t(product1 >> 32) ^ counter[1] ^ key[0], uint32_t(product1),
               uint32_t(product0 >> 32) ^ counter[3] ^ key[1], uint32_t(product0)};
  }
  return counter;
}

// FNV-1a, 64 bits, of a name: the stream that a parameter's elements are drawn from.
constexpr uint64_t philox_stream_key(std::string_view name) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV offset basis
  for (char c : name) {
    hash ^= uint8_t(c);
    hash *= 0x100000001b3ull;  // FNV prime
  }
  return hash;
}

// The block for one element: the counter and key layout written at the top of this file.
constexpr PhiloxCounter philox_block(uint64_t seed, uint64_t stream, int64_t index) {
  const uint64_t i = uint64_t(index);
  return philox4x32_10({uint32_t(i), uint32_t(i >> 32), uint32_t(stream), uint32_t(stream >> 32)},
                       {uint32_t(seed), uint32_t(seed >> 32)});
}

// Standard normal quantile (inverse CDF) in double: Acklam's rational approximation
// (relative error 1.15e-9) refined by one Halley step on erfc, which brings it to a few
// ulp. p = 0 gives -inf, p = 1 gives +inf, other values outside (0, 1) give NaN.
double normal_quantile(double p);
// Standard normal CDF, 0.5 * erfc(-x / sqrt(2)): accurate in the lower tail.
double normal_cdf(double x);

// One element of each distribution, a pure function of (seed, stream, index).
//   uniform       in [low, high): the double draw is in [0, 1); a float that rounds up to
//                 high is moved down to the float below it, so the interval stays open.
//   normal        Box-Muller (the cosine branch) from two 53-bit uniforms, u1 in (0, 1].
//   trunc_normal  torch.nn.init.trunc_normal_: mean, std, and absolute cut points a <= b;
//                 inverse CDF of a uniform in (Phi(alpha), Phi(beta)), clamped into [a, b].
float philox_uniform(uint64_t seed, uint64_t stream, int64_t index, float low, float high);
float philox_normal(uint64_t seed, uint64_t stream, int64_t index, float mean, float std);
float philox_trunc_normal(uint64_t seed, uint64_t stream, int64_t index, float mean, float std,
                          float a, float b);

// Fill a CPU tensor of any float dtype with elements first_index .. first_index+numel-1 of
// the stream, each drawn as float, then rounded to the tensor's dtype (round to nearest
// even; fp8 saturates). Element k of `out` is element first_index + k of the stream, so a
// slice generated alone is bitwise the same slice of the whole. Threads split elements;
// the result does not depend on the thread count.
void philox_fill_uniform(Tensor& out, uint64_t seed, uint64_t stream, int64_t first_index,
                         float low, float high);
void philox_fill_normal(Tensor& out, uint64_t seed, uint64_t stream, int64_t first_index,
                        float mean, float std);
void philox_fill_trunc_normal(Tensor& out, uint64_t seed, uint64_t stream, int64_t first_index,
                              float mean, float std, float a, float b);

}  // namespace titan

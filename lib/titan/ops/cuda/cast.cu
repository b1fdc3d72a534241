// Cast on the GPU (contract in ops/cast.h): one thread per element, decode the source bits
// to f32 bits, encode those to the destination format. Both halves are integer arithmetic
// on the bits, written from core/float_formats.cpp's MiniFloat (frexp/ldexp/nearbyint
// become a leading-bit count and a round-to-nearest-even shift), so the result is the
// CPU's bit for bit: the hardware conversions (__float2half_rn, __nv_cvt_float_to_fp8)
// round the same way but make other NaN bits, and fp8's non-saturating overflow differs.
// One kernel instance per (source, destination) pair; a same-dtype cast copies bytes.
#include <cstdint>

#include "titan/ops/cast.h"
#include "titan/ops/cuda/common.cuh"

namespace titan::ops::cuda {
namespace {

// The formats narrower than f32, as core/float_formats.cpp defines them.
struct MiniFloat {
  int exp_bits;
  int man_bits;
  bool has_inf;  // IEEE-like top exponent; false for e4m3fn
  bool saturate;

  __device__ int bias() const { return (1 << (exp_bits - 1)) - 1; }
  __device__ uint32_t sign_bit() const { return 1u << (exp_bits + man_bits); }
  __device__ uint32_t nan_bits() const {
    return has_inf ? ((((1u << exp_bits) - 1) << man_bits) | (1u << (man_bits - 1)))
                   : ((1u << (exp_bits + man_bits)) - 1);
  }
  __device__ uint32_t inf_bits() const { return ((1u << exp_bits) - 1) << man_bits; }
  __device__ uint32_t max_finite_bits() const {
    return has_inf ? inf_bits() - 1 : nan_bits() - 1;
  }

  // f32 bits -> this format, rounding to nearest even (MiniFloat::encode on the CPU).
  __device__ uint32_t encode(uint32_t u) const {
    const uint32_t sign = (u >> 31) ? sign_bit() : 0u;
    const uint32_t magnitude = u & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return sign | nan_bits();
    const uint32_t overflow = (has_inf && !saturate) ? inf_bits() : max_finite_bits();
    if (magnitude == 0x7f800000u) return sign | overflow;
    if (magnitude == 0) return sign;
    // |f| = significand * 2^scale, significand an integer below 2^24.
    const uint32_t f32_exp = magnitude >> 23;
    const uint32_t significand = f32_exp == 0 ? (magnitude & 0x7fffffu)
                                              : ((magnitude & 0x7fffffu) | 0x800000u);
    const int scale = f32_exp == 0 ? -149 : int(f32_exp) - 150;
    int e = (31 - __clz(int(significand))) + scale;  // |f| = 1.x * 2^e
    const int min_exp = 1 - bias();
    // The kept integer is significand * 2^-shift (shift > 0 for every format here).
    const int shift = e < min_exp ? (min_exp - man_bits) - scale : (e - man_bits) - scale;
    uint32_t q = 0;
    if (shift < 32) {
      q = significand >> shift;
      const uint32_t rest = significand & ((1u << shift) - 1u);
      const uint32_t half = 1u << (shift - 1);
      if (rest > half || (rest == half && (q & 1u))) q += 1;
    }  // else: below half the smallest subnormal, rounds to 0
    uint32_t bits;
    if (e < min_exp) {
      bits = q;  // q == 2^man_bits encodes the smallest normal, as it should
    } else {
      if (q >= (2u << man_bits)) {
        q >>= 1;
        e += 1;
      }
      bits = (uint32_t(e + bias()) << man_bits) | (q - (1u << man_bits));
    }
    if (bits > max_finite_bits()) bits = overflow;
    return sign | bits;
  }

  // This format -> f32 bits, exact (MiniFloat::decode; NaN is the CPU's canonical NaN).
  __device__ uint32_t decode(uint32_t bits) const {
    const uint32_t sign = (bits & sign_bit()) ? 0x80000000u : 0u;
    bits &= sign_bit() - 1;
    const uint32_t exp_field = bits >> man_bits;
    const uint32_t man = bits & ((1u << man_bits) - 1);
    if (has_inf && exp_field == (1u << exp_bits) - 1) return sign | (man ? 0x7fc00000u : 0x7f800000u);
    if (!has_inf && bits == nan_bits()) return sign | 0x7fc00000u;
    if (exp_field == 0) {
      if (man == 0) return sign;
      const int top = 31 - __clz(int(man));  // man = 1.x * 2^top
      const uint32_t f32_exp = uint32_t(top + 1 - bias() - man_bits + 127);
      return sign | (f32_exp << 23) | ((man - (1u << top)) << (23 - top));
    }
    const uint32_t f32_exp = exp_field - uint32_t(bias()) + 127u;
    return sign | (f32_exp << 23) | (man << (23 - man_bits));
  }
};

__device__ constexpr MiniFloat kF16{5, 10, true, false};
__device__ constexpr MiniFloat kF8E4M3{4, 3, false, true};
__device__ constexpr MiniFloat kF8E5M2{5, 2, true, true};

// bf16_from_f32 of core/float_formats.h: quiet NaN keeps its top bits.
__device__ __forceinline__ uint32_t bf16_encode(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}

// How each dtype's element is stored, read as f32 bits and written from them.
template <DType D> struct Format;
template <> struct Format<DType::F32> {
  using Storage = uint32_t;
  __device__ static uint32_t decode(uint32_t b) { return b; }
  __device__ static uint32_t encode(uint32_t u) { return u; }
};
template <> struct Format<DType::BF16> {
  using Storage = uint16_t;
  __device__ static uint32_t decode(uint32_t b) { return b << 16; }
  __device__ static uint32_t encode(uint32_t u) { return bf16_encode(u); }
};
template <> struct Format<DType::F16> {
  using Storage = uint16_t;
  __device__ static uint32_t decode(uint32_t b) { return kF16.decode(b); }
  __device__ static uint32_t encode(uint32_t u) { return kF16.encode(u); }
};
template <> struct Format<DType::F8E4M3> {
  using Storage = uint8_t;
  __device__ static uint32_t decode(uint32_t b) { return kF8E4M3.decode(b); }
  __device__ static uint32_t encode(uint32_t u) { return kF8E4M3.encode(u); }
};
template <> struct Format<DType::F8E5M2> {
  using Storage = uint8_t;
  __device__ static uint32_t decode(uint32_t b) { return kF8E5M2.decode(b); }
  __device__ static uint32_t encode(uint32_t u) { return kF8E5M2.encode(u); }
};

template <DType S, DType D>
__global__ void cast_kernel(const typename Format<S>::Storage* in,
                            typename Format<D>::Storage* out, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = typename Format<D>::Storage(Format<D>::encode(Format<S>::decode(uint32_t(in[i]))));
  }
}

template <DType S, DType D>
void launch(const Tensor& src, Tensor& dst) {
  const int64_t n = src.numel();
  const int threads = 256;
  cast_kernel<S, D><<<grid_for(n, threads), threads, 0, compute_stream()>>>(
      static_cast<const typename Format<S>::Storage*>(src.raw_data()),
      static_cast<typename Format<D>::Storage*>(dst.raw_mutable_data()), n);
  check_launch("cast_kernel");
}

template <DType S>
void launch_to(const Tensor& src, Tensor& dst) {
  switch (dst.dtype()) {
    case DType::F32: return launch<S, DType::F32>(src, dst);
    case DType::BF16: return launch<S, DType::BF16>(src, dst);
    case DType::F16: return launch<S, DType::F16>(src, dst);
    case DType::F8E4M3: return launch<S, DType::F8E4M3>(src, dst);
    case DType::F8E5M2: return launch<S, DType::F8E5M2>(src, dst);
    default: TITAN_FAIL() << "cast (cuda): dst is " << dtype_name(dst.dtype());
  }
}

}  // namespace

void cast(const Tensor& src, Tensor& dst) {
  check_cast(src, dst);
  TITAN_CHECK(src.device().is_cuda()) << "cast (cuda): tensors are on " << src.device();
  if (src.numel() == 0) return;
  DeviceGuard guard(src.device().index);
  if (src.dtype() == dst.dtype()) {  // a copy keeps NaN payloads and every other bit
    if (dst.raw_mutable_data() != src.raw_data()) {
      CUDA_CHECK(cudaMemcpyAsync(dst.raw_mutable_data(), src.raw_data(), size_t(src.bytes()),
                                 cudaMemcpyDeviceToDevice, compute_stream()));
    }
    return;
  }
  switch (src.dtype()) {
    case DType::F32: return launch_to<DType::F32>(src, dst);
    case DType::BF16: return launch_to<DType::BF16>(src, dst);
    case DType::F16: return launch_to<DType::F16>(src, dst);
    case DType::F8E4M3: return launch_to<DType::F8E4M3>(src, dst);
    case DType::F8E5M2: return launch_to<DType::F8E5M2>(src, dst);
    default: break;  // rejected above
  }
}

}  // namespace titan::ops::cuda

// Float8 scaled casts on the GPU (contract and numerics in ops/float8.h). For f32 input
// every result is the CPU's (ops/cpu/float8.cpp) bit for bit; bf16 input gives what the
// CPU gives on its f32 values (bf16 -> f32 is exact).
//
//   amax   a max, exact in any order. Rows: one warp per row. Columns and the whole tensor:
//          partial maxima combined by atomicMax on their bits (non-negative floats order
//          like their bit patterns), onto an output zeroed first. NaN is skipped, as on the
//          CPU: std::max(m, NaN) keeps m, and so does fmaxf.
//   scales float8_scale's expression: the division in double (IEEE on the GPU as on the
//          host), rounded to f32 once, the mantissa cleared for power-of-two scales.
//   cast   fp8(x * s) by integer arithmetic on the f32 bits of the product (as ops/cuda/
//          cast.cu does, here specialized to the two saturating fp8 formats). The hardware
//          conversion (cvt.rn.satfinite.e4m3x2.f32, sm_89+) is documented to round to
//          nearest even and saturate too, but nothing here proves its NaN bits (signs) the
//          CPU's, and sm_80 has no such instruction.
//   NaN    CUDA's arithmetic returns one canonical NaN (0x7fffffff); the CPU reference runs
//          on x86, where a NaN operand comes out quieted with its sign, and an invalid
//          operation (0 * inf, 0 / 0: a scale of 0 comes from amax = inf) gives the negative
//          "default NaN" 0xffc00000. product_bits and quotient_bits reproduce x86's rule, so
//          that NaN signs (which fp8 keeps) and f32 NaN bits agree too.
//
// Element-wise casts run one thread per group of 4 elements (one 16-byte f32 load, one
// 4-byte fp8 store) when the row length is a multiple of 4 (any length with one scale for
// the tensor) and the pointers are aligned, else one per element.
// float8_quantize_transposed (declared in ops/float8_gemm.h, which says which GEMM operands
// need it) goes through a shared-memory tile, so that both its reads and its writes are
// coalesced.
#include <algorithm>
#include <cstdint>

#include "titan/ops/checks.h"
#include "titan/ops/cuda/common.cuh"
#include "titan/ops/float8.h"
#include "titan/ops/float8_gemm.h"

namespace titan::ops::cuda {
namespace {

// ---- f32 <-> fp8, on the bits ------------------------------------------------------------

__host__ __device__ inline uint32_t bits_of(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}
__host__ __device__ inline float float_of(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}
__host__ __device__ inline bool is_nan(float f) { return (bits_of(f) & 0x7fffffffu) > 0x7f800000u; }

// Index of the highest set bit (v > 0).
__host__ __device__ inline int top_bit(uint32_t v) {
#ifdef __CUDA_ARCH__
  return 31 - __clz(v);
#else
  return 31 - __builtin_clz(v);
#endif
}

// A saturating fp8 format (core/float_formats.h): e4m3fn (no infinities, S.1111.111 is NaN)
// or e5m2 (IEEE-like). Rounding to nearest even; beyond the range, infinities included, the
// largest finite value; NaN stays NaN with its sign.
template <int kExpBits, int kManBits, bool kHasInf>
struct Fp8Format {
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  static constexpr uint32_t kTopExp = (1u << kExpBits) - 1u;
  static constexpr uint32_t kNanBits =
      kHasInf ? ((kTopExp << kManBits) | (1u << (kManBits - 1))) : 0x7fu;
  static constexpr uint32_t kMaxFiniteBits = kHasInf ? (kTopExp << kManBits) - 1u : 0x7eu;

  // f32 bits -> fp8 bits.
  __host__ __device__ static uint32_t encode(uint32_t u) {
    const uint32_t sign = (u >> 24) & 0x80u;
    const uint32_t magnitude = u & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return sign | kNanBits;
    // The f32 bits of fp8's smallest normal, 2^(1 - bias).
    constexpr uint32_t kMinNormal = uint32_t(127 + 1 - kBias) << 23;
    constexpr int kDrop = 23 - kManBits;  // f32 mantissa bits that fp8 does not keep
    uint32_t bits;
    if (magnitude >= kMinNormal) {
      // Round to nearest even at bit kDrop; a carry out of the mantissa moves into the
      // exponent, as it should. Infinity and everything past the largest finite value end
      // above kMaxFiniteBits (e4m3's NaN code included) and saturate.
      const uint32_t rounded = magnitude + ((1u << (kDrop - 1)) - 1u) + ((magnitude >> kDrop) & 1u);
      bits = (rounded >> kDrop) - (uint32_t(127 - kBias) << kManBits);
      if (bits > kMaxFiniteBits) bits = kMaxFiniteBits;
    } else {
      // Below fp8's normals: a multiple of its smallest subnormal 2^(1 - bias - man).
      // |f| = significand * 2^(exponent - 150), so the multiple is significand >> shift.
      const uint32_t exponent_field = magnitude >> 23;
      const uint32_t significand =
          exponent_field != 0 ? ((magnitude & 0x7fffffu) | 0x800000u) : magnitude;
      const int exponent = exponent_field != 0 ? int(exponent_field) : 1;
      const int shift = 151 - kBias - kManBits - exponent;  // >= 21 here
      uint32_t q = 0;  // shift >= 32: below half the smallest subnormal
      if (shift < 32) {
        q = significand >> shift;
        const uint32_t rest = significand & ((1u << shift) - 1u);
        const uint32_t half = 1u << (shift - 1);
        if (rest > half || (rest == half && (q & 1u))) q += 1;
      }
      bits = q;  // q == 2^man encodes the smallest normal, as it should
    }
    return sign | bits;
  }

  // fp8 bits -> f32 bits, exact; NaN is the CPU's canonical quiet NaN with the sign.
  __host__ __device__ static uint32_t decode(uint32_t bits) {
    const uint32_t sign = (bits & 0x80u) << 24;
    const uint32_t magnitude = bits & 0x7fu;
    const uint32_t exponent_field = magnitude >> kManBits;
    const uint32_t man = magnitude & ((1u << kManBits) - 1u);
    if (kHasInf ? exponent_field == kTopExp : magnitude == 0x7fu) {
      return sign | (kHasInf && man == 0 ? 0x7f800000u : 0x7fc00000u);
    }
    if (exponent_field == 0) {
      if (man == 0) return sign;
      const int top = top_bit(man);  // man = 1.x * 2^top
      return sign | (uint32_t(top + 1 - kBias - kManBits + 127) << 23) |
             ((man - (1u << top)) << (23 - top));
    }
    return sign | ((exponent_field + uint32_t(127 - kBias)) << 23) | (man << (23 - kManBits));
  }
};

using E4m3 = Fp8Format<4, 3, false>;
using E5m2 = Fp8Format<5, 2, true>;

// The NaN x86 SSE makes of a NaN result of a op b: a's if a is NaN, else b's (quieted,
// sign kept), else the default NaN of an invalid operation.
__host__ __device__ inline uint32_t x86_nan(float a, float b) {
  if (is_nan(a)) return bits_of(a) | 0x00400000u;
  if (is_nan(b)) return bits_of(b) | 0x00400000u;
  return 0xffc00000u;
}

// x * s and a / s in f32, round to nearest even, subnormals kept (no -ftz), with the
// CPU's NaN bits.
__host__ __device__ inline uint32_t product_bits(float x, float s) {
#ifdef __CUDA_ARCH__
  const float p = __fmul_rn(x, s);
#else
  const float p = x * s;
#endif
  return is_nan(p) ? x86_nan(x, s) : bits_of(p);
}
__host__ __device__ inline uint32_t quotient_bits(uint32_t a_bits, float s) {
  const float a = float_of(a_bits);
#ifdef __CUDA_ARCH__
  const float r = __fdiv_rn(a, s);
#else
  const float r = a / s;
#endif
  return is_nan(r) ? x86_nan(a, s) : bits_of(r);
}

// The scale rule of float8_scale (ops/float8.cpp), NaN included: there std::max(NaN,
// 1e-12) is the NaN, which the double division and both conversions carry through quieted.
__host__ __device__ inline float scale_of(float amax, float format_max, bool power_of_two) {
  float scale;
  if (is_nan(amax)) {
    scale = float_of(bits_of(amax) | 0x00400000u);
  } else {
    const double a = double(amax);
    const double clamped = a < 1e-12 ? 1e-12 : a;
#ifdef __CUDA_ARCH__
    scale = __double2float_rn(double(format_max) / clamped);
#else
    scale = float(double(format_max) / clamped);
#endif
  }
  if (power_of_two) scale = float_of(bits_of(scale) & 0xff800000u);
  return scale;
}

// ---- element storage -------------------------------------------------------------------

struct Bf16 {
  uint16_t bits;
};
struct Fp8 {
  uint8_t bits;
};

// bf16_from_f32 of core/float_formats.h: round to nearest even, quiet NaN keeps its top bits.
__device__ __forceinline__ uint32_t bf16_encode(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(Bf16 v) { return __uint_as_float(uint32_t(v.bits) << 16); }
__device__ __forceinline__ void store_bits(float& out, uint32_t u) { out = __uint_as_float(u); }
__device__ __forceinline__ void store_bits(Bf16& out, uint32_t u) {
  out.bits = uint16_t(bf16_encode(u));
}

// kVec consecutive elements, loaded and stored as one access (16 bytes of f32, 4 of fp8).
template <class T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <class T, int kVec>
bool aligned_for_pack(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kVec) == 0;
}

// ---- amax ------------------------------------------------------------------------------

__device__ __forceinline__ float warp_max(float m) {
  for (int offset = 16; offset > 0; offset /= 2) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  }
  return m;
}

// One warp per row, kVec elements per load.
template <class In, int kVec>
__global__ void amax_rows_kernel(const In* x, float* amax, int64_t rows, int64_t groups_per_row) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t warps_per_block = blockDim.x / 32;
  for (int64_t row = int64_t(blockIdx.x) * warps_per_block + threadIdx.x / 32; row < rows;
       row += int64_t(gridDim.x) * warps_per_block) {
    const auto* packs = reinterpret_cast<const Pack<In, kVec>*>(x) + row * groups_per_row;
    float m = 0.0f;
    for (int64_t g = lane; g < groups_per_row; g += 32) {
      const Pack<In, kVec> p = packs[g];
#pragma unroll
      for (int t = 0; t < kVec; ++t) m = fmaxf(m, fabsf(to_f32(p.v[t])));
    }
    m = warp_max(m);
    if (lane == 0) amax[row] = m;
  }
}

// The whole tensor: block maxima, then one atomicMax per block onto zeroed bits.
template <class In, int kVec>
__global__ void amax_tensor_kernel(const In* x, unsigned int* amax_bits, int64_t groups) {
  __shared__ float warp_maxima[32];
  const auto* packs = reinterpret_cast<const Pack<In, kVec>*>(x);
  float m = 0.0f;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const Pack<In, kVec> p = packs[g];
#pragma unroll
    for (int t = 0; t < kVec; ++t) m = fmaxf(m, fabsf(to_f32(p.v[t])));
  }
  m = warp_max(m);
  if (threadIdx.x % 32 == 0) warp_maxima[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    m = threadIdx.x < blockDim.x / 32 ? warp_maxima[threadIdx.x] : 0.0f;
    m = warp_max(m);
    if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(m));
  }
}

// Per column: a thread per column over a block of rows (coalesced across the warp), then
// atomicMax onto zeroed bits.
template <class In>
__global__ void amax_columns_kernel(const In* x, unsigned int* amax_bits, int64_t rows,
                                    int64_t cols, int64_t rows_per_block) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const int64_t first = int64_t(blockIdx.y) * rows_per_block;
  const int64_t last = first + rows_per_block < rows ? first + rows_per_block : rows;
  float m = 0.0f;
  for (int64_t i = first; i < last; ++i) m = fmaxf(m, fabsf(to_f32(x[i * cols + j])));
  atomicMax(amax_bits + j, __float_as_uint(m));
}

template <class In>
void launch_amax(const Tensor& x, Float8Axis axis, Tensor& amax) {
  const int64_t cols = x.size(-1);
  const int64_t n = x.numel();
  const int64_t rows = cols == 0 ? 0 : n / cols;
  const In* in = data_as<In>(x);
  float* out = amax.mutable_data<float>();
  const int threads = 256;
  if (axis == Float8Axis::Rows) {
    if (rows == 0) return;
    const unsigned blocks = grid_for(rows, threads / 32);
    if (cols % 4 == 0 && aligned_for_pack<In, 4>(in)) {
      amax_rows_kernel<In, 4><<<blocks, threads, 0, compute_stream()>>>(in, out, rows, cols / 4);
    } else {
      amax_rows_kernel<In, 1><<<blocks, threads, 0, compute_stream()>>>(in, out, rows, cols);
    }
    check_launch("amax_rows_kernel");
    return;
  }
  CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(amax.numel()) * sizeof(float), compute_stream()));
  if (n == 0) return;
  auto* out_bits = reinterpret_cast<unsigned int*>(out);
  if (axis == Float8Axis::Tensor) {
    // At most 1024 blocks: enough to fill the GPU, few atomics.
    if (n % 4 == 0 && aligned_for_pack<In, 4>(in)) {
      amax_tensor_kernel<In, 4><<<grid_for(n / 4, threads, 1024), threads, 0, compute_stream()>>>(
          in, out_bits, n / 4);
    } else {
      amax_tensor_kernel<In, 1><<<grid_for(n, threads, 1024), threads, 0, compute_stream()>>>(
          in, out_bits, n);
    }
    check_launch("amax_tensor_kernel");
    return;
  }
  // Columns: blocks of at least 64 rows, and at most 65535 of them down the rows.
  const int64_t rows_per_block = std::max<int64_t>(64, ceil_div(rows, 65535));
  const dim3 grid(unsigned(ceil_div(cols, threads)), unsigned(ceil_div(rows, rows_per_block)));
  amax_columns_kernel<In><<<grid, threads, 0, compute_stream()>>>(in, out_bits, rows, cols,
                                                                   rows_per_block);
  check_launch("amax_columns_kernel");
}

// ---- scales ----------------------------------------------------------------------------

__global__ void scales_kernel(const float* amax, float* scale, int64_t n, float format_max,
                              bool power_of_two) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    scale[i] = scale_of(amax[i], format_max, power_of_two);
  }
}

// ---- element-wise casts ----------------------------------------------------------------

enum class Cast { Quantize, RoundTrip, Dequantize };

// One element: x (f32 or bf16; fp8 for Dequantize) with its scale s -> the output element.
template <Cast kCast, class Format, class In, class Out>
__device__ __forceinline__ Out cast_one(In x, float s) {
  Out out;
  if constexpr (kCast == Cast::Quantize) {
    out.bits = uint8_t(Format::encode(product_bits(to_f32(x), s)));
  } else if constexpr (kCast == Cast::RoundTrip) {
    const uint32_t q = Format::encode(product_bits(to_f32(x), s));
    store_bits(out, quotient_bits(Format::decode(q), s));
  } else {
    store_bits(out, quotient_bits(Format::decode(x.bits), s));
  }
  return out;
}

// Groups of kVec elements of the [rows, cols] view; a group never straddles two rows
// (kVec divides cols, or the axis is Tensor). x and y may be the same memory.
template <Cast kCast, class Format, class In, class Out, int kVec>
__global__ void cast_kernel(const In* x, const float* scale, Float8Axis axis, Out* y,
                            int64_t groups, int64_t groups_per_row) {
  const float tensor_scale = axis == Float8Axis::Tensor ? scale[0] : 0.0f;
  const auto* in = reinterpret_cast<const Pack<In, kVec>*>(x);
  auto* out = reinterpret_cast<Pack<Out, kVec>*>(y);
  const bool narrow_index = groups <= int64_t(UINT32_MAX);
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const Pack<In, kVec> p = in[g];
    Pack<Out, kVec> r;
    if (axis == Float8Axis::Tensor) {
#pragma unroll
      for (int t = 0; t < kVec; ++t) {
        r.v[t] = cast_one<kCast, Format, In, Out>(p.v[t], tensor_scale);
      }
    } else {
      int64_t row, group_in_row;
      if (narrow_index) {  // 32-bit division where it does (most tensors)
        const uint32_t row32 = uint32_t(g) / uint32_t(groups_per_row);
        row = row32;
        group_in_row = int64_t(uint32_t(g) - row32 * uint32_t(groups_per_row));
      } else {
        row = g / groups_per_row;
        group_in_row = g - row * groups_per_row;
      }
      if (axis == Float8Axis::Rows) {
        const float s = scale[row];
#pragma unroll
        for (int t = 0; t < kVec; ++t) r.v[t] = cast_one<kCast, Format, In, Out>(p.v[t], s);
      } else {
        const float* s = scale + group_in_row * kVec;
#pragma unroll
        for (int t = 0; t < kVec; ++t) r.v[t] = cast_one<kCast, Format, In, Out>(p.v[t], s[t]);
      }
    }
    out[g] = r;
  }
}

template <Cast kCast, class Format, class In, class Out>
void launch_cast(const Tensor& x, const Tensor& scale, Float8Axis axis, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const int64_t cols = x.size(-1);
  const int64_t row_elements = axis == Float8Axis::Tensor ? n : cols;
  const In* in = data_as<In>(x);
  Out* out = mutable_data_as<Out>(y);
  const float* s = scale.data<float>();
  const int threads = 256;
  if (row_elements % 4 == 0 && aligned_for_pack<In, 4>(in) && aligned_for_pack<Out, 4>(out)) {
    cast_kernel<kCast, Format, In, Out, 4><<<grid_for(n / 4, threads), threads, 0,
                                              compute_stream()>>>(in, s, axis, out, n / 4,
                                                                  row_elements / 4);
  } else {
    cast_kernel<kCast, Format, In, Out, 1><<<grid_for(n, threads), threads, 0,
                                              compute_stream()>>>(in, s, axis, out, n,
                                                                  row_elements);
  }
  check_launch("float8 cast_kernel");
}

// Quantize and round trip: dispatch on x's dtype (and y's for the round trip).
template <Cast kCast, class Format>
void launch_from_x(const Tensor& x, const Tensor& scale, Float8Axis axis, Tensor& y) {
  if constexpr (kCast == Cast::Quantize) {
    if (x.dtype() == DType::F32) return launch_cast<kCast, Format, float, Fp8>(x, scale, axis, y);
    return launch_cast<kCast, Format, Bf16, Fp8>(x, scale, axis, y);
  } else {
    const bool y_f32 = y.dtype() == DType::F32;
    if (x.dtype() == DType::F32) {
      if (y_f32) return launch_cast<kCast, Format, float, float>(x, scale, axis, y);
      return launch_cast<kCast, Format, float, Bf16>(x, scale, axis, y);
    }
    if (y_f32) return launch_cast<kCast, Format, Bf16, float>(x, scale, axis, y);
    return launch_cast<kCast, Format, Bf16, Bf16>(x, scale, axis, y);
  }
}

// ---- transposed quantize ---------------------------------------------------------------

constexpr int kTileRows = 128;  // rows of x = columns of q^T: 4 bytes per thread on the way out
constexpr int kTileCols = 32;   // columns of x = rows of q^T: one warp-wide read
constexpr int kTileThreadRows = 8;

// Block kTileCols x kTileThreadRows threads; a tile of x's rows [r0, r0+128) and columns
// [c0, c0+32): read along x's rows, written along q^T's rows through shared memory.
template <class Format, class In>
__global__ void quantize_transposed_kernel(const In* x, const float* scale, Float8Axis axis,
                                           uint8_t* qt, int64_t rows, int64_t cols,
                                           bool word_stores) {
  // One pad byte per row: the write phase reads a column of bytes, 4 rows per thread, and
  // the odd row length spreads those over the banks.
  __shared__ uint8_t tile[kTileRows][kTileCols + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c0 = int64_t(blockIdx.x) * kTileCols;
  for (int64_t r0 = int64_t(blockIdx.y) * kTileRows; r0 < rows;
       r0 += int64_t(gridDim.y) * kTileRows) {
    const int64_t c = c0 + tx;
    for (int r = ty; r < kTileRows; r += kTileThreadRows) {
      const int64_t i = r0 + r;
      uint32_t q = 0;
      if (i < rows && c < cols) {
        const float s = axis == Float8Axis::Tensor ? scale[0]
                        : axis == Float8Axis::Rows ? scale[i]
                                                   : scale[c];
        q = Format::encode(product_bits(to_f32(x[i * cols + c]), s));
      }
      tile[r][tx] = uint8_t(q);
    }
    __syncthreads();
    const int64_t i0 = r0 + 4 * tx;
    for (int cc = ty; cc < kTileCols; cc += kTileThreadRows) {
      const int64_t j = c0 + cc;
      if (j >= cols || i0 >= rows) continue;
      uint8_t* dst = qt + j * rows + i0;
      if (word_stores && i0 + 3 < rows) {
        const uint32_t word = uint32_t(tile[4 * tx][cc]) | (uint32_t(tile[4 * tx + 1][cc]) << 8) |
                              (uint32_t(tile[4 * tx + 2][cc]) << 16) |
                              (uint32_t(tile[4 * tx + 3][cc]) << 24);
        *reinterpret_cast<uint32_t*>(dst) = word;
      } else {
        for (int t = 0; t < 4 && i0 + t < rows; ++t) dst[t] = tile[4 * tx + t][cc];
      }
    }
    __syncthreads();  // the tile is refilled next
  }
}

template <class Format, class In>
void launch_quantize_transposed(const Tensor& x, const Tensor& scale, Float8Axis axis,
                                Tensor& qt, int64_t rows, int64_t cols) {
  auto* out = static_cast<uint8_t*>(qt.raw_mutable_data());
  const bool word_stores = rows % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
  const dim3 block(kTileCols, kTileThreadRows);
  const dim3 grid(unsigned(ceil_div(cols, kTileCols)),
                  unsigned(std::min<int64_t>(ceil_div(rows, kTileRows), 65535)));
  quantize_transposed_kernel<Format, In><<<grid, block, 0, compute_stream()>>>(
      data_as<In>(x), scale.data<float>(), axis, out, rows, cols, word_stores);
  check_launch("quantize_transposed_kernel");
}

}  // namespace

void float8_amax(const Tensor& x, Float8Axis axis, Tensor& amax) {
  check_float8_amax(x, axis, amax);
  check_float_dtype(x, kFloatDTypes, "float8_amax", "x");
  check_on_one_device({{&x, "x"}, {&amax, "amax"}}, "float8_amax");
  if (amax.numel() == 0) return;
  DeviceGuard guard(x.device().index);
  if (x.dtype() == DType::F32) return launch_amax<float>(x, axis, amax);
  return launch_amax<Bf16>(x, axis, amax);
}

void float8_scales(const Tensor& amax, DType format, bool power_of_two, Tensor& scale) {
  check_shape(scale, amax.shape(), "float8_scales", "scale");
  TITAN_CHECK(amax.dtype() == DType::F32 && scale.dtype() == DType::F32)
      << "float8_scales: amax and scale must be f32";
  const float format_max = float8_max(format);  // rejects a format that is not float8
  check_on_one_device({{&amax, "amax"}, {&scale, "scale"}}, "float8_scales");
  const int64_t n = amax.numel();
  if (n == 0) return;
  DeviceGuard guard(amax.device().index);
  const int threads = 256;
  scales_kernel<<<grid_for(n, threads), threads, 0, compute_stream()>>>(
      amax.data<float>(), scale.mutable_data<float>(), n, format_max, power_of_two);
  check_launch("scales_kernel");
}

void float8_round_trip(const Tensor& x, const Tensor& scale, Float8Axis axis, DType format,
                       Tensor& y) {
  check_float8_cast(x, scale, axis, y);
  check_float_dtype(x, kFloatDTypes, "float8_round_trip", "x");
  check_float_dtype(y, kFloatDTypes, "float8_round_trip", "y");
  TITAN_CHECK(format == DType::F8E4M3 || format == DType::F8E5M2)
      << "float8_round_trip: " << dtype_name(format) << " is not float8";
  check_on_one_device({{&x, "x"}, {&scale, "scale"}, {&y, "y"}}, "float8_round_trip");
  DeviceGuard guard(x.device().index);
  if (format == DType::F8E4M3) return launch_from_x<Cast::RoundTrip, E4m3>(x, scale, axis, y);
  return launch_from_x<Cast::RoundTrip, E5m2>(x, scale, axis, y);
}

void float8_quantize(const Tensor& x, const Tensor& scale, Float8Axis axis, Tensor& q) {
  check_float8_cast(x, scale, axis, q);
  check_float_dtype(x, kFloatDTypes, "float8_quantize", "x");
  TITAN_CHECK(q.dtype() == DType::F8E4M3 || q.dtype() == DType::F8E5M2)
      << "float8_quantize: q is " << dtype_name(q.dtype()) << ", not float8";
  check_on_one_device({{&x, "x"}, {&scale, "scale"}, {&q, "q"}}, "float8_quantize");
  DeviceGuard guard(x.device().index);
  if (q.dtype() == DType::F8E4M3) return launch_from_x<Cast::Quantize, E4m3>(x, scale, axis, q);
  return launch_from_x<Cast::Quantize, E5m2>(x, scale, axis, q);
}

void float8_dequantize(const Tensor& q, const Tensor& scale, Float8Axis axis, Tensor& y) {
  check_float8_cast(q, scale, axis, y);
  check_float_dtype(y, kFloatDTypes, "float8_dequantize", "y");
  const bool e4m3 = q.dtype() == DType::F8E4M3;
  TITAN_CHECK(e4m3 || q.dtype() == DType::F8E5M2)
      << "float8_dequantize: q is " << dtype_name(q.dtype()) << ", not float8";
  check_on_one_device({{&q, "q"}, {&scale, "scale"}, {&y, "y"}}, "float8_dequantize");
  DeviceGuard guard(q.device().index);
  const bool y_f32 = y.dtype() == DType::F32;
  if (e4m3) {
    if (y_f32) return launch_cast<Cast::Dequantize, E4m3, Fp8, float>(q, scale, axis, y);
    return launch_cast<Cast::Dequantize, E4m3, Fp8, Bf16>(q, scale, axis, y);
  }
  if (y_f32) return launch_cast<Cast::Dequantize, E5m2, Fp8, float>(q, scale, axis, y);
  return launch_cast<Cast::Dequantize, E5m2, Fp8, Bf16>(q, scale, axis, y);
}

void float8_quantize_transposed(const Tensor& x, const Tensor& scale, Float8Axis axis,
                                Tensor& q_transposed) {
  TITAN_CHECK(x.defined() && x.dim() >= 1) << "float8_quantize_transposed: x must have a dim";
  check_float_dtype(x, kFloatDTypes, "float8_quantize_transposed", "x");
  const int64_t cols = x.size(-1);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  check_shape(q_transposed, {cols, rows}, "float8_quantize_transposed", "q");
  check_shape(scale, {float8_scale_count(x, axis)}, "float8_quantize_transposed", "scale");
  TITAN_CHECK(scale.dtype() == DType::F32) << "float8_quantize_transposed: scale must be f32";
  const DType format = q_transposed.dtype();
  TITAN_CHECK(format == DType::F8E4M3 || format == DType::F8E5M2)
      << "float8_quantize_transposed: q is " << dtype_name(format) << ", not float8";
  check_on_one_device({{&x, "x"}, {&scale, "scale"}, {&q_transposed, "q"}},
                      "float8_quantize_transposed");
  if (rows == 0) return;
  DeviceGuard guard(x.device().index);
  Tensor& q = q_transposed;
  const bool f32 = x.dtype() == DType::F32;
  if (format == DType::F8E4M3) {
    if (f32) return launch_quantize_transposed<E4m3, float>(x, scale, axis, q, rows, cols);
    return launch_quantize_transposed<E4m3, Bf16>(x, scale, axis, q, rows, cols);
  }
  if (f32) return launch_quantize_transposed<E5m2, float>(x, scale, axis, q, rows, cols);
  return launch_quantize_transposed<E5m2, Bf16>(x, scale, axis, q, rows, cols);
}

}  // namespace titan::ops::cuda

// The CUDA Float8 casts (ops/float8.h) against the CPU ops, bit for bit, and the cuBLASLt
// Float8 GEMM (ops/float8_gemm.h) against its CPU emulation.
//
// Casts: every rounding case of both fp8 formats (each sign, f32 exponent and kept
// mantissa, with the dropped bits just under, at and just over half, infinities, NaNs and
// f32 subnormals included); then random tensors for every axis, format and input dtype,
// with a zero row, a NaN, rows of very different magnitudes, and scales 4x too large (a
// stale amax) so that many values saturate. bf16 input is compared with the CPU on its f32
// values (exact), bf16 output with the CPU's f32 result rounded by bf16_from_f32. Inputs
// that start one row into their allocation take the kernels' unvectorized paths.
//
// GEMM: the CPU emulation is ops::cpu::float8_dequantize of both operands, then the f32
// matmul. fp8 products are exact in f32, so the GPU differs from it only in summation order,
// in where 1/(sa sb) is applied, and in the fp8 tensor cores' accumulation, which keeps
// about 14 bits of partial sums before cuBLASLt promotes them to f32 (DeepSeek-V3 report,
// H800): hence a bound of 1e-3 (f32 out) or 1e-2 (bf16 out) relative to
// sum_k |a_mk b_nk| + |c_mn|. Small-integer operands with power-of-two scales make every
// sum exact in any order and any of those precisions: those tests compare exactly, which
// pins down the layout, the transposition and where the scales go.
//
// Device tests skip without a GPU; the GEMM tests also skip on GPUs without fp8 tensor
// cores (compute capability below 8.9). Without CUDA in the build the file is one
// skipped test.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaFloat8, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "support/cuda_device.h"
#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/core/float_formats.h"
#include "titan/ops/float8.h"
#include "titan/ops/float8_gemm.h"
#include "titan/ops/matmul.h"

namespace titan::testing {
namespace {

using ops::Float8Axis;

constexpr Float8Axis kAxes[] = {Float8Axis::Tensor, Float8Axis::Rows, Float8Axis::Columns};
constexpr DType kFormats[] = {DType::F8E4M3, DType::F8E5M2};

// ---- helpers ---------------------------------------------------------------------------

template <class F>
std::string message(F&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

#define EXPECT_ERROR_HAS(call, text) \
  EXPECT_NE(message([&] { call; }).find(text), std::string::npos) << message([&] { call; })

Tensor zeros(const Shape& shape, DType dtype = DType::F32) { return Tensor::zeros(shape, dtype); }

Tensor gpu(const Tensor& host) { return to_device(host, Device::cuda(0)); }
Tensor gpu_empty(const Shape& shape, DType dtype) {
  return Tensor::empty(shape, dtype, Device::cuda(0));
}

// A device copy that starts one dim-0 slice into its allocation, so that its pointer is as
// unaligned as a row of it (ops take such views from narrow()).
Tensor gpu_offset(const Tensor& host) {
  Shape full = host.shape();
  full[0] += 1;
  Tensor parent = Tensor::zeros(full, host.dtype());
  Tensor inside = parent.narrow(1, host.size(0));
  copy_tensor(host, inside);
  return gpu(parent).narrow(1, host.size(0));
}

Tensor bf16_of(const Tensor& f32) {
  Tensor t = Tensor::empty(f32.shape(), DType::BF16);
  for (int64_t i = 0; i < f32.numel(); ++i) {
    t.mutable_data<bf16_t>()[i] = bf16_from_f32(f32.data<float>()[i]);
  }
  return t;
}
Tensor f32_of(const Tensor& bf16) {
  Tensor t = Tensor::empty(bf16.shape(), DType::F32);
  for (int64_t i = 0; i < bf16.numel(); ++i) {
    t.mutable_data<float>()[i] = f32_from_bf16(bf16.data<bf16_t>()[i]);
  }
  return t;
}

std::string axis_name(Float8Axis axis) { return ops::float8_axis_name(axis); }

// Element-wise bit equality of two host tensors; names the first differences in hex.
void expect_same_bits(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const int64_t width = dtype_bytes(actual.dtype());
  const auto* a = static_cast<const uint8_t*>(actual.raw_data());
  const auto* e = static_cast<const uint8_t*>(expected.raw_data());
  auto bits = [width](const uint8_t* p) {
    uint32_t v = 0;
    std::memcpy(&v, p, size_t(width));
    return v;
  };
  int64_t differences = 0;
  std::ostringstream first;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    if (std::memcmp(a + i * width, e + i * width, size_t(width)) != 0 && differences++ < 5) {
      first << "\n  element " << i << ": cuda 0x" << std::hex << bits(a + i * width) << ", cpu 0x"
            << bits(e + i * width) << std::dec;
    }
  }
  EXPECT_EQ(differences, 0) << what << ": " << differences << " of " << actual.numel()
                            << " elements differ" << first.str();
}

// f32 bits as a host tensor.
Tensor from_bits(const std::vector<uint32_t>& bits, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::memcpy(t.raw_mutable_data(), bits.data(), bits.size() * sizeof(uint32_t));
  return t;
}

// Every rounding situation of both formats: sign x f32 exponent x the 7 mantissa bits
// fp8 keeps or rounds at (22..16), with the low 16 bits at 0, 1, just under half of bit
// 16, half, just over, and all ones. Both formats drop 20 or 21 bits from normals, and
// their subnormals round at bit 20 or above, so each tie and its neighbours occur.
Tensor rounding_cases() {
  std::vector<uint32_t> bits;
  for (uint32_t sign = 0; sign < 2; ++sign) {
    for (uint32_t exponent = 0; exponent < 256; ++exponent) {
      for (uint32_t high = 0; high < 128; ++high) {
        for (uint32_t low : {0x0u, 0x1u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
          bits.push_back((sign << 31) | (exponent << 23) | (high << 16) | low);
        }
      }
    }
  }
  return from_bits(bits, {int64_t(bits.size()) / 64, 64});
}

// Random values of very different magnitudes per row (2^-6 to 2^6), a zero row (row 2), and
// with `specials` a NaN, an infinity and a negative NaN.
Tensor awkward_tensor(const Shape& shape, uint64_t seed, bool specials) {
  Tensor t = random_tensor(shape, seed);
  float* v = t.mutable_data<float>();
  const int64_t cols = shape.back();
  const int64_t rows = t.numel() / cols;
  for (int64_t i = 0; i < rows; ++i) {
    const float magnitude = std::ldexp(1.0f, int((i * 5) % 13) - 6);
    for (int64_t j = 0; j < cols; ++j) {
      v[i * cols + j] = i == 2 ? 0.0f : v[i * cols + j] * magnitude;
    }
  }
  if (specials && t.numel() > 20) {
    v[1] = std::numeric_limits<float>::quiet_NaN();
    v[t.numel() - 1] = -std::numeric_limits<float>::quiet_NaN();
    v[t.numel() / 2] = std::numeric_limits<float>::infinity();
  }
  return t;
}

// The CPU's q transposed: [rows, cols] bytes -> [cols, rows].
Tensor transpose_bytes(const Tensor& q) {
  const int64_t cols = q.size(-1), rows = q.numel() / cols;
  Tensor t = Tensor::empty({cols, rows}, q.dtype());
  const auto* in = static_cast<const uint8_t*>(q.raw_data());
  auto* out = static_cast<uint8_t*>(t.raw_mutable_data());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) out[j * rows + i] = in[i * cols + j];
  }
  return t;
}

// ---- input checks: host tensors, no device needed ------------------------------------

TEST(CudaFloat8Input, RejectsDtypesShapesAndHostTensors) {
  const Tensor x = zeros({2, 4}), s = zeros({1});
  Tensor q = zeros({2, 4}, DType::F8E4M3), y = zeros({2, 4});
  Tensor q32 = zeros({2, 4});
  EXPECT_ERROR_HAS(ops::cuda::float8_quantize(x, s, Float8Axis::Tensor, q32),
                   "float8_quantize: q is f32, not float8");
  EXPECT_ERROR_HAS(ops::cuda::float8_quantize(zeros({2, 4}, DType::F16), s, Float8Axis::Tensor, q),
                   "x is f16, expected f32 or bf16");
  EXPECT_ERROR_HAS(ops::cuda::float8_quantize(x, zeros({3}), Float8Axis::Rows, q),
                   "scale has shape [3], expected [2]");
  EXPECT_ERROR_HAS(ops::cuda::float8_quantize(x, s, Float8Axis::Tensor, q),
                   "every tensor must be on a CUDA device");
  EXPECT_ERROR_HAS(ops::cuda::float8_round_trip(x, s, Float8Axis::Tensor, DType::BF16, y),
                   "bf16 is not float8");
  EXPECT_ERROR_HAS(ops::cuda::float8_dequantize(x, s, Float8Axis::Tensor, y),
                   "float8_dequantize: q is f32, not float8");
  Tensor amax = zeros({4});
  EXPECT_ERROR_HAS(ops::cuda::float8_amax(x, Float8Axis::Rows, amax),
                   "amax has shape [4], expected [2]");
  EXPECT_ERROR_HAS(ops::cuda::float8_amax(x, Float8Axis::Columns, amax),
                   "every tensor must be on a CUDA device");
  Tensor scale = zeros({1});
  EXPECT_ERROR_HAS(ops::cuda::float8_scales(zeros({1}), DType::F32, false, scale),
                   "f32 is not a float8 format");
  Tensor q_wrong = zeros({2, 4}, DType::F8E4M3);
  EXPECT_ERROR_HAS(ops::cuda::float8_quantize_transposed(x, s, Float8Axis::Tensor, q_wrong),
                   "q has shape [2, 4], expected [4, 2]");
  Tensor q_t = zeros({4, 2}, DType::F8E5M2);
  EXPECT_ERROR_HAS(ops::cuda::float8_quantize_transposed(x, zeros({2}), Float8Axis::Columns, q_t),
                   "scale has shape [2], expected [4]");
  EXPECT_ERROR_HAS(ops::cuda::float8_quantize_transposed(x, zeros({4}), Float8Axis::Columns, q_t),
                   "every tensor must be on a CUDA device");
}

TEST(CudaFloat8GemmInput, RejectsBadCallsByName) {
  const Tensor a = zeros({8, 32}, DType::F8E4M3), b = zeros({16, 32}, DType::F8E4M3);
  const Tensor one = zeros({1});
  Tensor c = zeros({8, 16});
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(zeros({8, 32}, DType::F8E5M2), one,
                                          zeros({16, 32}, DType::F8E5M2), one, c,
                                          ops::Accumulate::No),
                   "f8e5m2 x f8e5m2 has no cuBLASLt kernel");
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(zeros({8, 32}, DType::BF16), one, b, one, c,
                                          ops::Accumulate::No),
                   "a_q and b_q must be f8e4m3 or f8e5m2");
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(a, one, zeros({16, 24}, DType::F8E4M3), one, c,
                                          ops::Accumulate::No),
                   "b_q has shape [16, 24], expected [N, 32]");
  Tensor c_wrong = zeros({8, 15});
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(a, one, b, one, c_wrong, ops::Accumulate::No),
                   "c has shape [8, 15], expected [8, 16]");
  Tensor c16 = zeros({8, 16}, DType::F16);
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(a, one, b, one, c16, ops::Accumulate::No),
                   "c is f16, expected f32 or bf16");
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(a, zeros({7}), b, one, c, ops::Accumulate::No),
                   "a_scale has shape [7], expected [1] or [8]");
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(a, one, b, zeros({16}, DType::BF16), c,
                                          ops::Accumulate::No),
                   "a_scale and b_scale must be f32");
  Tensor c_small = zeros({8, 8});
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(zeros({8, 24}, DType::F8E4M3), one,
                                          zeros({8, 24}, DType::F8E4M3), one, c_small,
                                          ops::Accumulate::No),
                   "K = 24 and N = 8 must be multiples of 16");
  EXPECT_ERROR_HAS(ops::cuda::float8_gemm(a, one, b, one, c, ops::Accumulate::No),
                   "every tensor must be on a CUDA device");
  EXPECT_ERROR_HAS(ops::float8_gemm(a, one, b, one, c, ops::Accumulate::No),
                   "float8_gemm has no kernel for cpu");
  EXPECT_FALSE(ops::float8_gemm_supported(Device::cpu()));
}

// ---- casts on the device ---------------------------------------------------------------

TEST(CudaFloat8, EveryRoundingCaseQuantizesAsOnCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const Tensor x = rounding_cases();
  const Tensor x_gpu = gpu(x);
  for (DType format : kFormats) {
    // 1: the cast alone; 0.7: a product that rounds first; 2^-10: a shifted range.
    for (float s : {1.0f, 0.7f, 0.0009765625f}) {
      SCOPED_TRACE(std::string(dtype_name(format)) + " scale " + std::to_string(s));
      Tensor scale = Tensor::empty({1}, DType::F32);
      scale.mutable_data<float>()[0] = s;
      const Tensor scale_gpu = gpu(scale);
      Tensor q = Tensor::empty(x.shape(), format);
      ops::cpu::float8_quantize(x, scale, Float8Axis::Tensor, q);
      Tensor q_gpu = gpu_empty(x.shape(), format);
      ops::float8_quantize(x_gpu, scale_gpu, Float8Axis::Tensor, q_gpu);
      expect_same_bits(to_host(q_gpu), q, "quantize");

      Tensor y = Tensor::empty(x.shape(), DType::F32);
      ops::cpu::float8_round_trip(x, scale, Float8Axis::Tensor, format, y);
      Tensor y_gpu = gpu_empty(x.shape(), DType::F32);
      ops::float8_round_trip(x_gpu, scale_gpu, Float8Axis::Tensor, format, y_gpu);
      expect_same_bits(to_host(y_gpu), y, "round trip");
    }
  }
}

// All 256 codes of each format, four rows with different scales (one a power of two),
// to f32 and to bf16.
TEST(CudaFloat8, EveryCodeDequantizesAsOnCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  Tensor scale = Tensor::empty({4}, DType::F32);
  const float scales[] = {1.0f, 0.3f, 3e-5f, 448.0f};
  std::memcpy(scale.raw_mutable_data(), scales, sizeof scales);
  for (DType format : kFormats) {
    SCOPED_TRACE(dtype_name(format));
    Tensor q = Tensor::empty({4, 256}, format);
    auto* codes = static_cast<uint8_t*>(q.raw_mutable_data());
    for (int i = 0; i < 4 * 256; ++i) codes[i] = uint8_t(i % 256);
    Tensor y = Tensor::empty({4, 256}, DType::F32);
    ops::cpu::float8_dequantize(q, scale, Float8Axis::Rows, y);
    Tensor y_gpu = gpu_empty({4, 256}, DType::F32);
    ops::float8_dequantize(gpu(q), gpu(scale), Float8Axis::Rows, y_gpu);
    expect_same_bits(to_host(y_gpu), y, "dequantize to f32");
    Tensor y16_gpu = gpu_empty({4, 256}, DType::BF16);
    ops::float8_dequantize(gpu(q), gpu(scale), Float8Axis::Rows, y16_gpu);
    expect_same_bits(to_host(y16_gpu), bf16_of(y), "dequantize to bf16");
  }
}

TEST(CudaFloat8, ScalesMatchCpuOnEdgeValues) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> amax = {0.0f, -0.0f, 1e-13f, 1e-12f, std::nextafter(1e-12f, 1.0f),
                             1.4e-45f, 1.17e-38f, 1.0f, 3.0f, 448.0f, 57344.0f, 1e30f,
                             3.4e38f, std::numeric_limits<float>::infinity(), nan, -nan, -1.0f};
  const Tensor random = random_tensor({200}, 3, 1000.0f);
  for (int64_t i = 0; i < random.numel(); ++i) amax.push_back(std::fabs(random.data<float>()[i]));
  Tensor amax_host = Tensor::empty({int64_t(amax.size())}, DType::F32);
  std::memcpy(amax_host.raw_mutable_data(), amax.data(), amax.size() * sizeof(float));
  for (DType format : kFormats) {
    for (bool power_of_two : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(format)) + (power_of_two ? " power of two" : ""));
      Tensor scale = Tensor::empty(amax_host.shape(), DType::F32);
      ops::cpu::float8_scales(amax_host, format, power_of_two, scale);
      Tensor scale_gpu = gpu_empty(amax_host.shape(), DType::F32);
      ops::float8_scales(gpu(amax_host), format, power_of_two, scale_gpu);
      expect_same_bits(to_host(scale_gpu), scale, "scales");
    }
  }
}

TEST(CudaFloat8, AmaxMatchesCpuOnEveryAxisAndDtype) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<Shape> shapes = {{37, 53}, {64, 256}, {2, 3, 40}, {1, 1}, {700, 12}};
  for (size_t c = 0; c < shapes.size(); ++c) {
    const Tensor x = awkward_tensor(shapes[c], 10 + c, c == 0);
    for (DType dtype : {DType::F32, DType::BF16}) {
      const Tensor x_stored = dtype == DType::F32 ? x : bf16_of(x);
      const Tensor x_ref = dtype == DType::F32 ? x : f32_of(x_stored);
      for (bool offset : {false, true}) {
        const Tensor x_gpu = offset ? gpu_offset(x_stored) : gpu(x_stored);
        for (Float8Axis axis : kAxes) {
          SCOPED_TRACE(shape_string(shapes[c]) + " " + std::string(dtype_name(dtype)) + " " +
                       axis_name(axis) + (offset ? " offset" : ""));
          const int64_t count = ops::float8_scale_count(x, axis);
          Tensor amax = Tensor::empty({count}, DType::F32);
          ops::cpu::float8_amax(x_ref, axis, amax);
          Tensor amax_gpu = gpu_empty({count}, DType::F32);
          ops::float8_amax(x_gpu, axis, amax_gpu);
          expect_same_bits(to_host(amax_gpu), amax, "amax");
        }
      }
    }
  }
}

// Quantize, round trip (to f32, to bf16, in place), dequantize and the transposed quantize,
// for every axis, format, input dtype and alignment, with fresh and with stale (4x) scales.
TEST(CudaFloat8, CastsMatchCpuOnEveryAxisFormatAndDtype) {
  SKIP_WITHOUT_CUDA_DEVICE();
  // Rows 128 and 300: 4-byte stores in the transposed quantize; 33 and 6: byte stores.
  const std::vector<Shape> shapes = {{128, 64}, {33, 7}, {2, 3, 40}, {300, 96}};
  for (size_t c = 0; c < shapes.size(); ++c) {
    const Shape& shape = shapes[c];
    const Tensor x = awkward_tensor(shape, 20 + c, true);
    const int64_t cols = shape.back(), rows = x.numel() / cols;
    for (DType dtype : {DType::F32, DType::BF16}) {
      const Tensor x_stored = dtype == DType::F32 ? x : bf16_of(x);
      const Tensor x_ref = dtype == DType::F32 ? x : f32_of(x_stored);
      for (Float8Axis axis : kAxes) {
        for (DType format : kFormats) {
          for (bool stale : {false, true}) {
            for (bool offset : {false, true}) {
              SCOPED_TRACE(shape_string(shape) + " " + std::string(dtype_name(dtype)) + " " +
                           axis_name(axis) + " " + std::string(dtype_name(format)) +
                           (stale ? " stale scales" : "") + (offset ? " offset" : ""));
              // Scales on the CPU (their own test is above); power-of-two when stale.
              const int64_t count = ops::float8_scale_count(x, axis);
              Tensor amax = Tensor::empty({count}, DType::F32);
              ops::cpu::float8_amax(x_ref, axis, amax);
              Tensor scale = Tensor::empty({count}, DType::F32);
              ops::cpu::float8_scales(amax, format, stale, scale);
              if (stale) {
                for (int64_t i = 0; i < count; ++i) scale.mutable_data<float>()[i] *= 4.0f;
              }
              const Tensor scale_gpu = gpu(scale);
              const Tensor x_gpu = offset ? gpu_offset(x_stored) : gpu(x_stored);

              Tensor q = Tensor::empty(shape, format);
              ops::cpu::float8_quantize(x_ref, scale, axis, q);
              Tensor q_gpu = gpu_empty(shape, format);
              ops::float8_quantize(x_gpu, scale_gpu, axis, q_gpu);
              expect_same_bits(to_host(q_gpu), q, "quantize");

              Tensor q_t_gpu = gpu_empty({cols, rows}, format);
              ops::float8_quantize_transposed(x_gpu, scale_gpu, axis, q_t_gpu);
              expect_same_bits(to_host(q_t_gpu), transpose_bytes(q), "quantize transposed");

              Tensor y = Tensor::empty(shape, DType::F32);
              ops::cpu::float8_round_trip(x_ref, scale, axis, format, y);
              Tensor y_gpu = gpu_empty(shape, DType::F32);
              ops::float8_round_trip(x_gpu, scale_gpu, axis, format, y_gpu);
              expect_same_bits(to_host(y_gpu), y, "round trip to f32");
              Tensor y16_gpu = gpu_empty(shape, DType::BF16);
              ops::float8_round_trip(x_gpu, scale_gpu, axis, format, y16_gpu);
              expect_same_bits(to_host(y16_gpu), bf16_of(y), "round trip to bf16");
              Tensor in_place = offset ? gpu_offset(x_stored) : gpu(x_stored);
              ops::float8_round_trip(in_place, scale_gpu, axis, format, in_place);
              expect_same_bits(to_host(in_place), dtype == DType::F32 ? y : bf16_of(y),
                               "round trip in place");

              Tensor d = Tensor::empty(shape, DType::F32);
              ops::cpu::float8_dequantize(q, scale, axis, d);
              const Tensor q_in = offset ? gpu_offset(q) : gpu(q);
              Tensor d_gpu = gpu_empty(shape, DType::F32);
              ops::float8_dequantize(q_in, scale_gpu, axis, d_gpu);
              expect_same_bits(to_host(d_gpu), d, "dequantize to f32");
              Tensor d16_gpu = gpu_empty(shape, DType::BF16);
              ops::float8_dequantize(q_in, scale_gpu, axis, d16_gpu);
              expect_same_bits(to_host(d16_gpu), bf16_of(d), "dequantize to bf16");
              if (HasFailure()) return;  // one failing case says enough
            }
          }
        }
      }
    }
  }
}

// ---- the GEMM --------------------------------------------------------------------------

// Skips without a GPU, and on GPUs without fp8 tensor cores, saying which. Called from
// SetUp: a skip recorded there keeps the test body from running.
void skip_without_float8_gemm() {
  const std::string reason = cuda_unavailable_reason();
  if (!reason.empty()) GTEST_SKIP() << "no CUDA device: " << reason;
  if (!ops::float8_gemm_supported(Device::cuda(0))) {
    cudaDeviceProp properties{};
    cudaGetDeviceProperties(&properties, 0);
    GTEST_SKIP() << "float8_gemm needs fp8 tensor cores (compute capability 8.9+); device 0 is "
                 << properties.name << ", " << properties.major << "." << properties.minor;
  }
}

enum class Scales { Tensorwise, Rowwise, TensorA_RowsB };

struct Float8GemmCase {
  Shape a_shape;  // [..., K]: M rows of K
  int64_t n;
  DType a_format, b_format;
  Scales scales;
  DType out;
  ops::Accumulate accumulate;

  std::string label() const {
    const int64_t k = a_shape.back(), m = shape_numel(a_shape) / k;
    std::ostringstream os;  // M x N x K
    os << m << "x" << n << "x" << k << (a_shape.size() > 2 ? "_a3d" : "") << "_"
       << dtype_name(a_format) << "_" << dtype_name(b_format) << "_"
       << (scales == Scales::Tensorwise ? "tensorwise"
           : scales == Scales::Rowwise  ? "rowwise"
                                        : "tensor_a_rows_b")
       << "_" << dtype_name(out) << (accumulate == ops::Accumulate::Yes ? "_accumulate" : "");
    return os.str();
  }
};

void PrintTo(const Float8GemmCase& c, std::ostream* os) { *os << c.label(); }

std::vector<Float8GemmCase> float8_gemm_cases() {
  using ops::Accumulate;
  constexpr DType E4 = DType::F8E4M3, E5 = DType::F8E5M2, F32 = DType::F32, BF16 = DType::BF16;
  return {
      {{64, 96}, 48, E4, E4, Scales::Tensorwise, F32, Accumulate::No},
      {{64, 96}, 48, E4, E5, Scales::Tensorwise, F32, Accumulate::No},
      {{64, 96}, 48, E5, E4, Scales::Tensorwise, BF16, Accumulate::No},
      {{40, 64}, 32, E4, E4, Scales::Rowwise, F32, Accumulate::No},
      {{40, 64}, 32, E4, E5, Scales::Rowwise, BF16, Accumulate::No},
      {{64, 96}, 48, E4, E4, Scales::TensorA_RowsB, F32, Accumulate::No},
      {{128, 512}, 256, E4, E4, Scales::Rowwise, F32, Accumulate::Yes},
      {{128, 512}, 256, E4, E5, Scales::Tensorwise, BF16, Accumulate::Yes},
      {{2, 20, 64}, 32, E4, E4, Scales::Rowwise, F32, Accumulate::No},  // a_q with 3 dims
  };
}

class CudaFloat8Gemm : public ::testing::TestWithParam<Float8GemmCase> {
 protected:
  void SetUp() override { skip_without_float8_gemm(); }
};

// One operand, quantized on the CPU: q, its scales, and what the emulation multiplies.
struct Operand {
  Tensor q, scale, dequantized;
};
Operand quantize_on_cpu(const Tensor& x, DType format, Float8Axis axis) {
  const int64_t count = ops::float8_scale_count(x, axis);
  Tensor amax = Tensor::empty({count}, DType::F32);
  ops::cpu::float8_amax(x, axis, amax);
  Operand o{Tensor::empty(x.shape(), format), Tensor::empty({count}, DType::F32),
            Tensor::empty(x.shape(), DType::F32)};
  ops::cpu::float8_scales(amax, format, false, o.scale);
  ops::cpu::float8_quantize(x, o.scale, axis, o.q);
  ops::cpu::float8_dequantize(o.q, o.scale, axis, o.dequantized);
  return o;
}

TEST_P(CudaFloat8Gemm, MatchesCpuEmulation) {
  const Float8GemmCase& c = GetParam();
  const int64_t k = c.a_shape.back(), m = shape_numel(c.a_shape) / k, n = c.n;
  // Rows of very different magnitudes (and a zero row), so that rowwise scales matter.
  const Tensor a = awkward_tensor(c.a_shape, 31, false), b = awkward_tensor({n, k}, 32, false);
  const Float8Axis a_axis = c.scales == Scales::Rowwise ? Float8Axis::Rows : Float8Axis::Tensor;
  const Float8Axis b_axis = c.scales == Scales::Tensorwise ? Float8Axis::Tensor : Float8Axis::Rows;
  const Operand qa = quantize_on_cpu(a, c.a_format, a_axis);
  const Operand qb = quantize_on_cpu(b, c.b_format, b_axis);
  Shape c_shape = c.a_shape;
  c_shape.back() = n;
  Tensor c0 = random_tensor(c_shape, 33);
  if (c.out == DType::BF16) c0 = f32_of(bf16_of(c0));  // what a bf16 c holds

  Tensor expected = Tensor::empty({m, n}, DType::F32);
  std::memcpy(expected.raw_mutable_data(), c0.raw_data(), size_t(c0.bytes()));
  const bool accumulate = c.accumulate == ops::Accumulate::Yes;
  ops::cpu::matmul(qa.dequantized.reshape({m, k}), ops::Transpose::No, qb.dequantized,
                   ops::Transpose::Yes, expected, 1.0f, accumulate ? 1.0f : 0.0f);

  Tensor c_gpu = gpu(c.out == DType::F32 ? c0 : bf16_of(c0));
  ops::float8_gemm(gpu(qa.q), gpu(qa.scale), gpu(qb.q), gpu(qb.scale), c_gpu, c.accumulate);
  ASSERT_EQ(c_gpu.shape(), c_shape);
  const Values got = to_values(to_host(c_gpu)), want = to_values(expected);
  const Values av = to_values(qa.dequantized), bv = to_values(qb.dequantized), cv = to_values(c0);

  const double tolerance = c.out == DType::BF16 ? 1e-2 : 1e-3;
  int64_t failures = 0;
  double worst_ratio = 0;
  std::ostringstream first;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double magnitude = 0;
      for (int64_t p = 0; p < k; ++p) {
        magnitude += std::fabs(av[size_t(i * k + p)] * bv[size_t(j * k + p)]);
      }
      const size_t e = size_t(i * n + j);
      const double bound = tolerance * (magnitude + (accumulate ? std::fabs(cv[e]) : 0.0)) + 1e-30;
      const double diff = std::fabs(got[e] - want[e]);
      const double ratio =
          std::isfinite(got[e]) ? diff / bound : std::numeric_limits<double>::infinity();
      worst_ratio = std::max(worst_ratio, ratio);
      if (!(ratio <= 1.0) && failures++ < 5) {
        first << "\n  c[" << i << ", " << j << "]: cuda " << got[e] << ", emulation " << want[e]
              << ", |diff| " << diff << " > bound " << bound;
      }
    }
  }
  EXPECT_EQ(failures, 0) << c.label() << ": " << failures << " of " << m * n
                         << " elements outside tolerance " << tolerance
                         << "; worst |diff|/bound = " << worst_ratio << first.str();
}

INSTANTIATE_TEST_SUITE_P(Table, CudaFloat8Gemm, ::testing::ValuesIn(float8_gemm_cases()),
                         [](const ::testing::TestParamInfo<Float8GemmCase>& info) {
                           return info.param.label();
                         });

class CudaFloat8GemmExact : public ::testing::Test {
 protected:
  void SetUp() override { skip_without_float8_gemm(); }
};

// q holds integers in [-8, 8] (exact in both formats) and every scale is a power of two,
// so each product, partial sum (|sum| <= 64 * 64 = 4096) and result is exact: the GPU
// must give the exact value, whatever its summation order and accumulator precision.
TEST_F(CudaFloat8GemmExact, IntegerOperandsGiveExactSums) {
  const int64_t m = 24, n = 48, k = 64;
  for (DType b_format : kFormats) {
    for (bool rowwise : {false, true}) {
      for (ops::Accumulate accumulate : {ops::Accumulate::No, ops::Accumulate::Yes}) {
        SCOPED_TRACE(std::string(dtype_name(b_format)) + (rowwise ? " rowwise" : " tensorwise") +
                     (accumulate == ops::Accumulate::Yes ? " accumulate" : ""));
        auto integers = [](const Shape& shape, uint64_t seed) {
          Tensor t = random_tensor(shape, seed, 8.999f);
          for (int64_t i = 0; i < t.numel(); ++i) {
            t.mutable_data<float>()[i] = std::trunc(t.data<float>()[i]);
          }
          return t;
        };
        const Tensor a = integers({m, k}, 41), b = integers({n, k}, 42), c0 = integers({m, n}, 43);
        Tensor one = Tensor::empty({1}, DType::F32);
        one.mutable_data<float>()[0] = 1.0f;
        Tensor qa = Tensor::empty({m, k}, DType::F8E4M3), qb = Tensor::empty({n, k}, b_format);
        ops::cpu::float8_quantize(a, one, Float8Axis::Tensor, qa);  // exact: q = a
        ops::cpu::float8_quantize(b, one, Float8Axis::Tensor, qb);
        Tensor sa = Tensor::empty({rowwise ? m : 1}, DType::F32);
        Tensor sb = Tensor::empty({rowwise ? n : 1}, DType::F32);
        for (int64_t i = 0; i < sa.numel(); ++i) {
          sa.mutable_data<float>()[i] = std::ldexp(1.0f, int(i % 3) - 1);
        }
        for (int64_t j = 0; j < sb.numel(); ++j) {
          sb.mutable_data<float>()[j] = std::ldexp(1.0f, -int(j % 4));
        }

        Tensor c_gpu = gpu(c0);
        ops::float8_gemm(gpu(qa), gpu(sa), gpu(qb), gpu(sb), c_gpu, accumulate);
        const Values got = to_values(to_host(c_gpu));
        int64_t wrong = 0;
        std::ostringstream first;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            double sum = 0;
            for (int64_t p = 0; p < k; ++p) {
              sum += double(a.data<float>()[i * k + p]) * double(b.data<float>()[j * k + p]);
            }
            double want = sum / (double(sa.data<float>()[rowwise ? i : 0]) *
                                 double(sb.data<float>()[rowwise ? j : 0]));
            if (accumulate == ops::Accumulate::Yes) want += double(c0.data<float>()[i * n + j]);
            const double have = got[size_t(i * n + j)];
            if (have != want && wrong++ < 5) {
              first << "\n  c[" << i << ", " << j << "]: cuda " << have << ", exact " << want;
            }
          }
        }
        EXPECT_EQ(wrong, 0) << wrong << " of " << m * n << " sums are not exact" << first.str();
      }
    }
  }
}

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA

// Cast (ops/cast.h): every pair of float dtypes, checked bit for bit against the scalar
// conversions of core/float_formats.h composed through f32 (those are tested exhaustively
// in core/float_formats_test.cpp), on every bit pattern of each 16- and 8-bit source.
// The op-case table rows ([N, D], flags = destination DType) run f32 -> dtype -> f32
// against a float64 rounding reference, so another backend is compared through them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "op_harness.h"
#include "support/float_reference.h"
#include "titan/core/float_formats.h"
#include "titan/ops/cast.h"

namespace titan::testing {
namespace {

constexpr DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16, DType::F8E4M3,
                                 DType::F8E5M2};

// Scalar conversions by runtime dtype, on raw bits (the test's own plumbing, not the op's).
float decode(DType t, uint32_t bits) {
  switch (t) {
    case DType::F32: return f32_from_bits(bits);
    case DType::BF16: return f32_from_bf16({uint16_t(bits)});
    case DType::F16: return f32_from_f16({uint16_t(bits)});
    case DType::F8E4M3: return f32_from_f8e4m3({uint8_t(bits)});
    case DType::F8E5M2: return f32_from_f8e5m2({uint8_t(bits)});
    default: throw Error("decode: not a float dtype");
  }
}
uint32_t encode(DType t, float x) {
  switch (t) {
    case DType::F32: return f32_bits(x);
    case DType::BF16: return bf16_from_f32(x).bits;
    case DType::F16: return f16_from_f32(x).bits;
    case DType::F8E4M3: return f8e4m3_from_f32(x).bits;
    case DType::F8E5M2: return f8e5m2_from_f32(x).bits;
    default: throw Error("encode: not a float dtype");
  }
}
uint32_t element_bits(const Tensor& t, int64_t i) {
  uint32_t bits = 0;
  const int64_t size = dtype_bytes(t.dtype());
  std::memcpy(&bits, static_cast<const char*>(t.raw_data()) + i * size, size_t(size));
  return bits;  // little-endian: the low bytes hold the element
}
Tensor tensor_of_bits(DType t, const std::vector<uint32_t>& bits) {
  Tensor out = Tensor::empty({int64_t(bits.size())}, t);
  const int64_t size = dtype_bytes(t);
  for (size_t i = 0; i < bits.size(); ++i) {
    std::memcpy(static_cast<char*>(out.raw_mutable_data()) + int64_t(i) * size, &bits[i],
                size_t(size));
  }
  return out;
}

// Every bit pattern of a narrow format; for f32, specials plus a spread of magnitudes.
std::vector<uint32_t> source_patterns(DType t) {
  std::vector<uint32_t> bits;
  if (t != DType::F32) {
    for (uint32_t b = 0; b < (1u << (8 * dtype_bytes(t))); ++b) bits.push_back(b);
    return bits;
  }
  for (float special : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 448.0f, 464.0f, 57344.0f, 65504.0f,
                        65520.0f, 1e30f, 0x1p-24f, 0x1p-25f, 0x1p-149f}) {
    bits.push_back(f32_bits(special));
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 200'000; ++i) bits.push_back(uint32_t(rng()));
  return bits;
}

TEST(Cast, EveryPairMatchesTheScalarConversionsThroughF32) {
  for (DType from : kFloatTypes) {
    const std::vector<uint32_t> patterns = source_patterns(from);
    const Tensor src = tensor_of_bits(from, patterns);
    for (DType to : kFloatTypes) {
      Tensor dst = Tensor::empty(src.shape(), to);
      ops::cast(src, dst);
      int64_t mismatches = 0;
      for (size_t i = 0; i < patterns.size(); ++i) {
        const float value = decode(from, patterns[i]);
        const uint32_t actual = element_bits(dst, int64_t(i));
        bool ok;
        if (from == to) {
          ok = actual == patterns[i];  // a same-dtype cast copies bits, NaN payloads included
        } else if (std::isnan(value)) {
          ok = std::isnan(decode(to, actual));
        } else {
          ok = actual == encode(to, value);
        }
        if (!ok && ++mismatches <= 3) {
          ADD_FAILURE() << dtype_name(from) << " -> " << dtype_name(to) << ": source bits "
                        << std::hex << patterns[i] << " gave " << actual;
        }
      }
      EXPECT_EQ(mismatches, 0) << dtype_name(from) << " -> " << dtype_name(to);
    }
  }
}

TEST(Cast, NarrowingRoundsOnceAndSaturatesFp8) {
  Tensor src = Tensor::empty({2, 3}, DType::F32);
  const float values[] = {1.0f + 0x1p-8f, 1e6f, -1e6f, INFINITY, 0x1p-25f, -0.0f};
  std::memcpy(src.mutable_data<float>(), values, sizeof(values));
  Tensor bf16 = Tensor::empty({2, 3}, DType::BF16);
  Tensor f16 = Tensor::empty({2, 3}, DType::F16);
  Tensor e4m3 = Tensor::empty({2, 3}, DType::F8E4M3);
  Tensor e5m2 = Tensor::empty({2, 3}, DType::F8E5M2);
  ops::cast(src, bf16);
  ops::cast(src, f16);
  ops::cast(src, e4m3);
  ops::cast(src, e5m2);
  EXPECT_EQ(bf16.data<bf16_t>()[0].bits, 0x3f80);  // the tie goes to the even 1.0
  EXPECT_EQ(f16.data<f16_t>()[1].bits, 0x7c00);    // f16 overflows to inf
  EXPECT_EQ(f16.data<f16_t>()[4].bits, 0x0000);    // half the smallest subnormal: tie to 0
  EXPECT_EQ(f16.data<f16_t>()[5].bits, 0x8000);
  EXPECT_EQ(e4m3.data<f8e4m3_t>()[1].bits, 0x7e);  // +448
  EXPECT_EQ(e4m3.data<f8e4m3_t>()[2].bits, 0xfe);  // -448
  EXPECT_EQ(e4m3.data<f8e4m3_t>()[3].bits, 0x7e);
  EXPECT_EQ(e5m2.data<f8e5m2_t>()[1].bits, 0x7b);  // +57344
  EXPECT_EQ(e5m2.data<f8e5m2_t>()[3].bits, 0x7b);
  // Back to f32 and between narrow formats: bf16 -> f16 rounds the f32 value once.
  Tensor back = Tensor::empty({2, 3}, DType::F32);
  ops::cast(e4m3, back);
  EXPECT_EQ(back.data<float>()[1], 448.0f);
  Tensor bf16_to_f16 = Tensor::empty({2, 3}, DType::F16);
  ops::cast(bf16, bf16_to_f16);
  EXPECT_EQ(bf16_to_f16.data<f16_t>()[0].bits, 0x3c00);
}

TEST(Cast, WorksOnViewsAndEmptyTensors) {
  Tensor src = random_tensor({6, 5}, 3);
  Tensor dst = Tensor::zeros({6, 5}, DType::BF16);
  Tensor rows_dst = dst.narrow(2, 3);
  ops::cast(src.narrow(1, 3), rows_dst);  // rows 1..3 of src land in rows 2..4 of dst
  for (int64_t i = 0; i < 15; ++i) {
    EXPECT_EQ(dst.data<bf16_t>()[10 + i].bits, bf16_from_f32(src.data<float>()[5 + i]).bits);
  }
  EXPECT_EQ(dst.data<bf16_t>()[9].bits, 0);   // outside the view: untouched
  EXPECT_EQ(dst.data<bf16_t>()[25].bits, 0);
  Tensor empty_src = Tensor::empty({0, 4}, DType::F32);
  Tensor empty_dst = Tensor::empty({0, 4}, DType::F16);
  EXPECT_NO_THROW(ops::cast(empty_src, empty_dst));
}

TEST(Cast, RejectsMismatchedShapesAndNonFloatDtypes) {
  const Tensor src = random_tensor({4, 6}, 1);
  Tensor same_numel = Tensor::empty({6, 4}, DType::BF16);
  EXPECT_THROW(ops::cast(src, same_numel), Error);
  Tensor ints = Tensor::empty({4, 6}, DType::I32);
  EXPECT_THROW(ops::cast(src, ints), Error);
  Tensor dst = Tensor::empty({4, 6}, DType::F16);
  EXPECT_THROW(ops::cast(ints, dst), Error);
  Tensor undefined;
  EXPECT_THROW(ops::cast(src, undefined), Error);
  EXPECT_THROW(ops::cast(undefined, dst), Error);
}

// --- the op-case table ---------------------------------------------------------------------

// Input: x [N, D]; flags: destination DType. Inputs span 2^-26 .. 2^15 in magnitude, so
// subnormals, every fp8's saturation and ordinary values all appear (f16 stays finite).
const bool registered = register_op_harness("cast", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      std::mt19937_64 rng(seed);
      std::uniform_real_distribution<double> mantissa(1.0, 2.0);
      std::uniform_int_distribution<int> exponent(-26, 14);
      const auto& dims = c.dims_as<CastDims>();
      Tensor x = Tensor::empty({dims.N, dims.D}, DType::F32);
      for (int64_t i = 0; i < x.numel(); ++i) {
        const double sign = (rng() & 1) ? -1.0 : 1.0;
        x.mutable_data<float>()[i] = float(sign * std::ldexp(mantissa(rng), exponent(rng)));
      }
      return std::vector<Tensor>{x};
    },
    .input_names = {"x"},
    .differentiable = {false},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      const FloatLayout layout = float_layout_of(DType(c.flags));
      Values y(in[0].size());
      for (size_t i = 0; i < y.size(); ++i) y[i] = round_to_format(in[0][i], layout);
      return y;
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      Tensor narrow = Tensor::empty(in[0].shape(), DType(c.flags), in[0].device());
      Tensor back = f32_beside(in[0], in[0].shape());
      ops::cast(in[0], narrow);
      ops::cast(narrow, back);
      return back;
    },
    .backward = {},
    .forward_tolerance = 0.0,  // rounding is exact: any difference is a wrong bit
    // The GPU cast is the CPU's bit for bit (optimizer_cuda_test.cpp checks every pattern);
    // from bf16 inputs it rounds the same values the CPU's f32 copy holds. Any positive
    // tolerance turns the bf16 pass on; this one allows no wrong bit at these magnitudes.
    .bf16_tolerance = 1e-30,
});

TEST(Cast, RoundingReferenceOfTheTableAgreesWithTheLandmarks) {
  // The float64 reference that the table rows use, checked on values with known answers.
  EXPECT_EQ(round_to_format(1.0 + 0x1p-8, float_layout_of(DType::BF16)), 1.0);
  EXPECT_EQ(round_to_format(1.0 + 3 * 0x1p-8, float_layout_of(DType::BF16)), 1.0 + 0x1p-6);
  EXPECT_EQ(round_to_format(0x1p-25, float_layout_of(DType::F16)), 0.0);
  EXPECT_EQ(round_to_format(3 * 0x1p-25, float_layout_of(DType::F16)), 0x1p-23);
  EXPECT_EQ(round_to_format(1000.0, float_layout_of(DType::F8E4M3)), 448.0);
  EXPECT_EQ(round_to_format(-1e6, float_layout_of(DType::F8E5M2)), -57344.0);
  EXPECT_EQ(round_to_format(0.3, float_layout_of(DType::F8E4M3)), 0.3125);
}

}  // namespace
}  // namespace titan::testing

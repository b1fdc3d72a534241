// Tensor (core/tensor.h): creation, the two views (reshape, narrow) and their shared
// storage, typed access that checks the dtype, and errors on misuse.
#include <gtest/gtest.h>

#include "titan/core/float_formats.h"
#include "titan/core/tensor.h"

namespace titan {
namespace {

TEST(Tensor, EmptyHasShapeDtypeAndBytes) {
  const Tensor t = Tensor::empty({2, 3, 5}, DType::BF16);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.shape(), (Shape{2, 3, 5}));
  EXPECT_EQ(t.size(0), 2);
  EXPECT_EQ(t.size(-1), 5);
  EXPECT_EQ(t.numel(), 30);
  EXPECT_EQ(t.bytes(), 60);
  EXPECT_EQ(t.dtype(), DType::BF16);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_THROW(t.size(3), Error);
  EXPECT_THROW(t.size(-4), Error);
  EXPECT_THROW(Tensor::empty({2, -1}, DType::F32), Error);
}

TEST(Tensor, ZerosIsZeroInEveryDtype) {
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::F8E4M3, DType::F8E5M2,
                      DType::I32, DType::I64, DType::U8}) {
    const Tensor t = Tensor::zeros({7, 3}, dtype);
    const auto* bytes = static_cast<const uint8_t*>(t.raw_data());
    for (int64_t i = 0; i < t.bytes(); ++i) ASSERT_EQ(bytes[i], 0) << dtype_name(dtype);
  }
  const Tensor f = Tensor::zeros({4}, DType::F32);
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(f.data<float>()[i], 0.0f);
  const Tensor none = Tensor::zeros({0, 3}, DType::F32);  // zero elements is a valid shape
  EXPECT_EQ(none.numel(), 0);
}

TEST(Tensor, ReshapeInfersOneDimAndSharesStorage) {
  Tensor t = Tensor::empty({4, 6}, DType::F32);
  for (int64_t i = 0; i < 24; ++i) t.mutable_data<float>()[i] = float(i);
  const Tensor r = t.reshape({2, -1, 3});
  EXPECT_EQ(r.shape(), (Shape{2, 4, 3}));
  EXPECT_TRUE(r.shares_storage_with(t));
  EXPECT_EQ(r.data<float>(), t.data<float>());
  EXPECT_EQ(t.reshape({-1}).shape(), (Shape{24}));
  EXPECT_THROW(t.reshape({5, -1}), Error);      // 24 is not a multiple of 5
  EXPECT_THROW(t.reshape({-1, -1}), Error);     // two unknowns
  EXPECT_THROW(t.reshape({5, 5}), Error);       // wrong element count
  t.mutable_data<float>()[7] = -1.0f;           // a write through one is seen by the other
  EXPECT_EQ(r.data<float>()[7], -1.0f);
}

TEST(Tensor, NarrowSelectsRowsOfDimZeroWithoutCopying) {
  Tensor t = Tensor::empty({5, 3}, DType::F16);
  for (int64_t i = 0; i < 15; ++i) t.mutable_data<f16_t>()[i] = f16_from_f32(float(i));
  Tensor rows = t.narrow(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{3, 3}));
  EXPECT_TRUE(rows.shares_storage_with(t));
  EXPECT_EQ(rows.data<f16_t>(), t.data<f16_t>() + 3);
  EXPECT_EQ(f32_from_f16(rows.data<f16_t>()[0]), 3.0f);
  rows.mutable_data<f16_t>()[8] = f16_from_f32(-2.0f);  // the last element of row 3
  EXPECT_EQ(f32_from_f16(t.data<f16_t>()[11]), -2.0f);
  // A narrow of a narrow adds the offsets; an empty narrow at the end is allowed.
  EXPECT_EQ(rows.narrow(2, 1).data<f16_t>(), t.data<f16_t>() + 9);
  EXPECT_EQ(t.narrow(5, 0).numel(), 0);
  EXPECT_THROW(t.narrow(4, 2), Error);
  EXPECT_THROW(t.narrow(-1, 1), Error);
  // zero_ on a view clears only the view.
  rows.narrow(0, 1).zero_();
  EXPECT_EQ(f32_from_f16(t.data<f16_t>()[2]), 2.0f);
  EXPECT_EQ(f32_from_f16(t.data<f16_t>()[3]), 0.0f);
  EXPECT_EQ(f32_from_f16(t.data<f16_t>()[6]), 6.0f);
}

TEST(Tensor, FlattenTo2dKeepsTheLastDim) {
  const Tensor t = Tensor::empty({2, 3, 4, 5}, DType::F32);
  EXPECT_EQ(t.flatten_to_2d().shape(), (Shape{24, 5}));
  EXPECT_EQ(Tensor::empty({7}, DType::F32).flatten_to_2d().shape(), (Shape{1, 7}));
  EXPECT_TRUE(t.flatten_to_2d().shares_storage_with(t));
  EXPECT_THROW(Tensor::empty({}, DType::F32).flatten_to_2d(), Error);
}

TEST(Tensor, TypedAccessRejectsTheWrongDtype) {
  Tensor t = Tensor::empty({3}, DType::BF16);
  EXPECT_NO_THROW(t.data<bf16_t>());
  EXPECT_THROW(t.data<float>(), Error);
  EXPECT_THROW(t.mutable_data<f16_t>(), Error);
  EXPECT_THROW(Tensor::empty({3}, DType::I32).data<int64_t>(), Error);
}

TEST(Tensor, UndefinedTensorAccessThrows) {
  Tensor undefined;
  EXPECT_FALSE(undefined.defined());
  EXPECT_THROW(undefined.raw_data(), Error);
  EXPECT_THROW(undefined.raw_mutable_data(), Error);
  EXPECT_THROW(undefined.data<float>(), Error);
  EXPECT_THROW(check_shape(undefined, {1}, "op", "x"), Error);
}

TEST(Tensor, CopiesAreHandlesAndKeepStorageAlive) {
  Tensor copy;
  const float* data = nullptr;
  {
    Tensor t = Tensor::zeros({8}, DType::F32);
    data = t.data<float>();
    copy = t;
  }
  EXPECT_EQ(copy.data<float>(), data);  // the storage outlived the original handle
  EXPECT_EQ(copy.data<float>()[7], 0.0f);
}

TEST(Tensor, InputChecksNameTheOpAndArgument) {
  const Tensor t = Tensor::empty({2, 3}, DType::F32);
  EXPECT_NO_THROW(check_shape(t, {2, 3}, "op", "x"));
  EXPECT_NO_THROW(check_dtype(t, DType::F32, "op", "x"));
  try {
    check_shape(t, {3, 2}, "my_op", "weight");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("my_op: weight has shape [2, 3], expected [3, 2]"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(check_dtype(t, DType::BF16, "op", "x"), Error);
}

}  // namespace
}  // namespace titan

// The CUDA cross-entropy (fused with the output projection, and on given logits) against
// the CPU op. f32 rows hold to 1e-5 relative to max(|cpu|, 1); bf16 rows compare with the
// CPU running f32 on the bf16-rounded inputs, within 1e-2 (dlogits are rounded to bf16
// for the backward GEMMs; see the harness in test/unit/ops/cross_entropy_test.cpp). The
// loss must be the same bits on every run. Input checks run before any device work, so
// they hold on every machine; device tests skip, saying why, without a GPU.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaLoss, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "support/cuda_device.h"
#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/core/float_formats.h"
#include "titan/ops/cast.h"
#include "titan/ops/cross_entropy.h"

namespace titan::testing {
namespace {

using ops::Accumulate;

const Device kGpu = Device::cuda(0);

std::string message_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Labels as the op table makes them: every third ignored when asked; i32 or i64.
Tensor make_labels(int64_t tokens, int64_t vocab, bool some_ignored, DType dtype, uint64_t seed) {
  Tensor labels = Tensor::empty({tokens}, dtype);
  for (int64_t n = 0; n < tokens; ++n) {
    int64_t label = int64_t((seed * 7 + uint64_t(n) * 13) % uint64_t(vocab));
    if (some_ignored && n % 3 == 1) label = ops::kIgnoreIndex;
    if (dtype == DType::I64) {
      labels.mutable_data<int64_t>()[n] = label;
    } else {
      labels.mutable_data<int32_t>()[n] = int32_t(label);
    }
  }
  return labels;
}

// f32 values rounded to bf16 and back (what the CPU computes on for a bf16 row).
Tensor bf16_rounded(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), DType::F32);
  for (int64_t i = 0; i < x.numel(); ++i) {
    out.mutable_data<float>()[i] = f32_from_bf16(bf16_from_f32(x.data<float>()[i]));
  }
  return out;
}

// A device copy of an f32 host tensor, in dtype.
Tensor device_as(const Tensor& x, DType dtype) {
  const Tensor on_gpu = to_device(x, kGpu);
  if (dtype == DType::F32) return on_gpu;
  Tensor out = Tensor::empty(x.shape(), dtype, kGpu);
  ops::cast(on_gpu, out);
  return out;
}

// ---- input checks (no GPU needed) ----

TEST(CudaLossInput, RejectsHostTensorsMixedDtypesAndBadWorkspaces) {
  const Tensor h = Tensor::zeros({3, 2}, DType::F32), w = Tensor::zeros({5, 2}, DType::F32);
  const Tensor w16 = Tensor::zeros({5, 2}, DType::BF16);
  const Tensor labels = make_labels(3, 5, false, DType::I32, 1);
  Tensor loss = Tensor::zeros({1}, DType::F32), lse = Tensor::zeros({3}, DType::F32);
  Tensor workspace = Tensor::zeros({2, 5}, DType::F32), wrong = Tensor::zeros({2, 6}, DType::F32);
  EXPECT_NE(message_of([&] { ops::cuda::cross_entropy_forward(h, w, labels, loss, lse, workspace); })
                .find("one CUDA device"),
            std::string::npos);
  EXPECT_NE(message_of([&] { ops::cuda::cross_entropy_forward(h, w16, labels, loss, lse, workspace); })
                .find("both f32 or both bf16"),
            std::string::npos);
  EXPECT_NE(message_of([&] { ops::cuda::cross_entropy_forward(h, w, labels, loss, lse, wrong); })
                .find("workspace must be [C, V]"),
            std::string::npos);
  Tensor dh = Tensor::zeros({3, 2}, DType::BF16), dw = Tensor::zeros({5, 2}, DType::F32);
  EXPECT_NE(message_of([&] {
              ops::cuda::cross_entropy_backward(h, w, labels, lse, 1.0f, dh, dw, Accumulate::No,
                                                workspace);
            }).find("expected f32, or bf16 for bf16 inputs"),
            std::string::npos);
  const Tensor int_logits = Tensor::zeros({3, 5}, DType::I32);
  EXPECT_NE(message_of([&] { ops::cuda::cross_entropy_logits_forward(int_logits, labels, loss, lse); })
                .find("expected f32 or bf16"),
            std::string::npos);
}

// ---- device tests ----

struct FusedCase {
  int64_t tokens, dim, vocab, chunk;
  bool some_ignored;
  DType labels_dtype, storage;
  Accumulate accumulate_dh;
};

std::string label_of(const FusedCase& c) {
  return std::string(dtype_name(c.storage)) + "_" + std::to_string(c.tokens) + "x" +
         std::to_string(c.dim) + "x" + std::to_string(c.vocab) + "_chunk" +
         std::to_string(c.chunk) + (c.some_ignored ? "_ignored" : "") + "_" +
         std::string(dtype_name(c.labels_dtype)) +
         (c.accumulate_dh == Accumulate::Yes ? "_accumulate" : "");
}

void PrintTo(const FusedCase& c, std::ostream* os) { *os << label_of(c); }

std::vector<FusedCase> fused_cases() {
  std::vector<FusedCase> cases;
  for (DType storage : {DType::F32, DType::BF16}) {
    cases.push_back({1, 4, 7, 1, false, DType::I32, storage, Accumulate::No});
    cases.push_back({5, 8, 11, 3, false, DType::I32, storage, Accumulate::No});
    cases.push_back({7, 6, 33, 3, true, DType::I32, storage, Accumulate::Yes});
    cases.push_back({4, 5, 9, 1, false, DType::I64, storage, Accumulate::No});
    cases.push_back({6, 16, 129, 4, true, DType::I64, storage, Accumulate::No});
    cases.push_back({37, 64, 2048, 16, true, DType::I32, storage, Accumulate::No});  // tiny flavor
    cases.push_back({300, 64, 1000, 300, true, DType::I32, storage, Accumulate::Yes});
  }
  return cases;
}

class CudaCrossEntropy : public ::testing::TestWithParam<FusedCase> {
 protected:
  void SetUp() override { SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(CudaCrossEntropy, ForwardAndBackwardMatchTheCpu) {
  const FusedCase& c = GetParam();
  const bool bf16 = c.storage == DType::BF16;
  Tensor h = random_tensor({c.tokens, c.dim}, 1), w = random_tensor({c.vocab, c.dim}, 2);
  if (bf16) {
    h = bf16_rounded(h);
    w = bf16_rounded(w);
  }
  const Tensor labels = make_labels(c.tokens, c.vocab, c.some_ignored, c.labels_dtype, 3);
  const float grad_scale = 0.37f;
  const Tensor dh0 = random_tensor({c.tokens, c.dim}, 4), dw0 = random_tensor({c.vocab, c.dim}, 5);

  // CPU reference.
  Tensor loss = Tensor::empty({1}, DType::F32), lse = Tensor::empty({c.tokens}, DType::F32);
  Tensor workspace = Tensor::empty({c.chunk, c.vocab}, DType::F32);
  Tensor dh = to_device(dh0, Device::cpu()), dw = to_device(dw0, Device::cpu());
  ops::cross_entropy_forward(h, w, labels, loss, lse, workspace);
  ops::cross_entropy_backward(h, w, labels, lse, grad_scale, dh, dw, c.accumulate_dh, workspace);

  // GPU.
  const Tensor h_gpu = device_as(h, c.storage), w_gpu = device_as(w, c.storage);
  const Tensor labels_gpu = to_device(labels, kGpu);
  Tensor loss_gpu = Tensor::empty({1}, DType::F32, kGpu);
  Tensor lse_gpu = Tensor::empty({c.tokens}, DType::F32, kGpu);
  Tensor workspace_gpu = Tensor::empty({c.chunk, c.vocab}, DType::F32, kGpu);
  Tensor dh_gpu = device_as(dh0, c.storage), dw_gpu = to_device(dw0, kGpu);
  ops::cross_entropy_forward(h_gpu, w_gpu, labels_gpu, loss_gpu, lse_gpu, workspace_gpu);
  const Tensor first_loss = to_host(loss_gpu);
  ops::cross_entropy_backward(h_gpu, w_gpu, labels_gpu, lse_gpu, grad_scale, dh_gpu, dw_gpu,
                              c.accumulate_dh, workspace_gpu);

  const double forward_tolerance = bf16 ? 1e-5 : 1e-5;  // same logits up to GEMM order
  const double backward_tolerance = bf16 ? 1e-2 : 1e-5;
  expect_close(to_values(to_host(loss_gpu)), to_values(loss), forward_tolerance, "loss");
  expect_close(to_values(to_host(lse_gpu)), to_values(lse), forward_tolerance, "lse");
  expect_close(to_values(to_host(dh_gpu)), to_values(dh), backward_tolerance, "dh");
  expect_close(to_values(to_host(dw_gpu)), to_values(dw), backward_tolerance, "dweight");

  // The loss is the same bits on a second run.
  ops::cross_entropy_forward(h_gpu, w_gpu, labels_gpu, loss_gpu, lse_gpu, workspace_gpu);
  const Tensor second_loss = to_host(loss_gpu);
  EXPECT_EQ(std::memcmp(first_loss.raw_data(), second_loss.raw_data(), sizeof(float)), 0);

  // forward_backward (the training step's call): the same bits as the two calls apart.
  Tensor fused_loss = Tensor::empty({1}, DType::F32, kGpu);
  Tensor fused_lse = Tensor::empty({c.tokens}, DType::F32, kGpu);
  Tensor fused_dh = device_as(dh0, c.storage), fused_dw = to_device(dw0, kGpu);
  ops::cross_entropy_forward_backward(h_gpu, w_gpu, labels_gpu, grad_scale, fused_loss,
                                      fused_lse, fused_dh, fused_dw, c.accumulate_dh,
                                      workspace_gpu);
  auto same_bits = [](const Tensor& a, const Tensor& b) {
    const Tensor x = to_host(a), y = to_host(b);
    return x.bytes() == y.bytes() &&
           std::memcmp(x.raw_data(), y.raw_data(), size_t(x.bytes())) == 0;
  };
  EXPECT_TRUE(same_bits(fused_loss, loss_gpu)) << "loss";
  EXPECT_TRUE(same_bits(fused_lse, lse_gpu)) << "lse";
  EXPECT_TRUE(same_bits(fused_dh, dh_gpu)) << "dh";
  EXPECT_TRUE(same_bits(fused_dw, dw_gpu)) << "dweight";
}

INSTANTIATE_TEST_SUITE_P(Table, CudaCrossEntropy, ::testing::ValuesIn(fused_cases()),
                         [](const ::testing::TestParamInfo<FusedCase>& info) {
                           return label_of(info.param);
                         });

TEST(CudaCrossEntropyContract, BackwardHalvesMatchTheCombinedBackwardBitwise) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType storage : {DType::F32, DType::BF16}) {
    const int64_t N = 9, D = 5, V = 23;
    const Tensor h = device_as(random_tensor({N, D}, 1), storage);
    const Tensor w = device_as(random_tensor({V, D}, 2), storage);
    const Tensor labels = to_device(make_labels(N, V, true, DType::I64, 3), kGpu);
    Tensor loss = Tensor::empty({1}, DType::F32, kGpu), lse = Tensor::empty({N}, DType::F32, kGpu);
    Tensor workspace = Tensor::empty({4, V}, DType::F32, kGpu);
    ops::cross_entropy_forward(h, w, labels, loss, lse, workspace);
    Tensor dh = Tensor::empty({N, D}, storage, kGpu), dw = Tensor::zeros({V, D}, DType::F32, kGpu);
    ops::cross_entropy_backward(h, w, labels, lse, 0.5f, dh, dw, Accumulate::No, workspace);
    Tensor dh2 = Tensor::empty({N, D}, storage, kGpu), dw2 = Tensor::zeros({V, D}, DType::F32, kGpu);
    ops::cross_entropy_backward_input(h, w, labels, lse, 0.5f, dh2, Accumulate::No, workspace);
    ops::cross_entropy_backward_weight(h, w, labels, lse, 0.5f, dw2, workspace);
    const Tensor a = to_host(dh), b = to_host(dh2), c = to_host(dw), d = to_host(dw2);
    EXPECT_EQ(std::memcmp(a.raw_data(), b.raw_data(), size_t(a.bytes())), 0) << dtype_name(storage);
    EXPECT_EQ(std::memcmp(c.raw_data(), d.raw_data(), size_t(c.bytes())), 0) << dtype_name(storage);
  }
}

// A bad label is recorded on the device, with no wait in the op and no read past a logits
// row, and raise_label_error throws the CPU's message for it once, naming the op, the
// token and the id; the ignore index is no error.
TEST(CudaCrossEntropyContract, RejectsLabelsOutsideTheVocabulary) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t N = 3, D = 2, V = 5;
  const Tensor h = to_device(random_tensor({N, D}, 1), kGpu), w = to_device(random_tensor({V, D}, 2), kGpu);
  Tensor loss = Tensor::empty({1}, DType::F32, kGpu), lse = Tensor::empty({N}, DType::F32, kGpu);
  Tensor workspace = Tensor::empty({2, V}, DType::F32, kGpu);
  Tensor labels = make_labels(N, V, false, DType::I32, 1);
  for (int32_t bad : {int32_t(V), -1, 1 << 30}) {
    labels.mutable_data<int32_t>()[1] = bad;
    ops::cross_entropy_forward(h, w, to_device(labels, kGpu), loss, lse, workspace);
    try {
      ops::raise_label_error(kGpu);
      ADD_FAILURE() << "label " << bad << " was not raised";
    } catch (const Error& e) {
      const std::string expected = "cross_entropy_forward: label " + std::to_string(bad) +
                                   " of token 1 is outside the vocabulary [0, 5)";
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(ops::raise_label_error(kGpu)) << "the record is cleared once raised";
  }
  labels.mutable_data<int32_t>()[1] = int32_t(ops::kIgnoreIndex);
  ops::cross_entropy_forward(h, w, to_device(labels, kGpu), loss, lse, workspace);
  EXPECT_NO_THROW(ops::raise_label_error(kGpu));
}

TEST(CudaCrossEntropyContract, LogitsVariantMatchesTheCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType storage : {DType::F32, DType::BF16}) {
    for (int64_t V : {int64_t(1), int64_t(13), int64_t(1000)}) {
      const int64_t N = 7;
      Tensor logits = random_tensor({N, V}, 4, 4.0f);
      if (storage == DType::BF16) logits = bf16_rounded(logits);
      const Tensor labels = make_labels(N, V, true, DType::I32, 2);
      const Tensor d0 = random_tensor({N, V}, 6);
      Tensor loss = Tensor::empty({1}, DType::F32), lse = Tensor::empty({N}, DType::F32);
      Tensor dlogits = to_device(d0, Device::cpu());
      ops::cross_entropy_logits_forward(logits, labels, loss, lse);
      ops::cross_entropy_logits_backward(logits, labels, lse, 0.25f, dlogits, Accumulate::Yes);

      const Tensor logits_gpu = device_as(logits, storage), labels_gpu = to_device(labels, kGpu);
      Tensor loss_gpu = Tensor::empty({1}, DType::F32, kGpu);
      Tensor lse_gpu = Tensor::empty({N}, DType::F32, kGpu);
      Tensor dlogits_gpu = to_device(d0, kGpu);  // f32 accumulation target
      ops::cross_entropy_logits_forward(logits_gpu, labels_gpu, loss_gpu, lse_gpu);
      ops::cross_entropy_logits_backward(logits_gpu, labels_gpu, lse_gpu, 0.25f, dlogits_gpu,
                                         Accumulate::Yes);
      const std::string what = std::string(dtype_name(storage)) + " V=" + std::to_string(V);
      expect_close(to_values(to_host(loss_gpu)), to_values(loss), 1e-5, what + " loss");
      expect_close(to_values(to_host(lse_gpu)), to_values(lse), 1e-5, what + " lse");
      expect_close(to_values(to_host(dlogits_gpu)), to_values(dlogits), 1e-5, what + " dlogits");
    }
  }
}

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA

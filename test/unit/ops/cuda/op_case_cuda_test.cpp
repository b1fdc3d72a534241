// The op-case table on the GPU (docs/design.md, "Tests"): every row of op_cases() runs
// through its op's harness (test/unit/ops/op_harness.h) on CUDA tensors and on the CPU,
// and the two are compared element by element, relative to max(|cpu|, 1). Each row runs
// twice, as Rows/CudaOpCase.<Forward|Backward>/<row>_<f32|bf16>:
//   f32:  the inputs go to the GPU as they are; within the harness's cuda_f32_tolerance.
//   bf16: float inputs (and dy, when the output is bf16) are rounded to bf16; the GPU gets
//         the bf16 tensors and the CPU f32 copies of the rounded values, so what differs
//         is only the GPU's f32 arithmetic and its rounding of bf16 outputs; within
//         bf16_tolerance. Integer inputs (ids, labels) go as they are. An op whose
//         harness sets no bf16_tolerance skips this pass.
// An op without a CUDA kernel yet skips, naming it, so coverage can be seen growing.
// Harnesses must be device-agnostic (outputs made with empty_like_input and the like, no
// host reads of input memory): one that reads a GPU tensor on the host crashes this test.
// Without a GPU every test skips, saying why; without CUDA in the build the table is one
// skipped test.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaOpCase, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <ostream>
#include <vector>

#include "support/cuda_device.h"
#include "titan/core/copy.h"
#include "unit/ops/op_harness.h"

namespace titan::testing {
namespace {

struct CudaOpRow {
  OpCase op_case;
  DType dtype;
  std::string label() const { return op_case.label() + "_" + std::string(dtype_name(dtype)); }
};
void PrintTo(const CudaOpRow& row, std::ostream* os) { *os << row.label(); }

std::vector<CudaOpRow> cuda_rows() {
  std::vector<CudaOpRow> rows;
  for (const OpCase& c : op_cases()) {
    for (DType dtype : {DType::F32, DType::BF16}) rows.push_back({c, dtype});
  }
  return rows;
}

struct Inputs {
  std::vector<Tensor> cpu, gpu;
};
Inputs inputs_for(const std::vector<Tensor>& made, DType dtype) {
  Inputs in;
  for (const Tensor& t : made) {
    const Tensor stored = stored_as(t, dtype);
    in.cpu.push_back(f32_copy(stored));
    in.gpu.push_back(to_device(stored, Device::cuda(0)));
  }
  return in;
}

// Runs f; returns the error of an op that has no CUDA kernel yet (the dispatch says
// "<op> has no kernel for cuda:N"), to skip with. Every other error propagates.
template <class F>
std::string missing_kernel(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.find("has no kernel for cuda") != std::string::npos) return what;
    throw;
  }
  return "";
}

class CudaOpCase : public ::testing::TestWithParam<CudaOpRow> {
 protected:
  void SetUp() override {
    const std::string reason = cuda_unavailable_reason();
    if (!reason.empty()) GTEST_SKIP() << "no CUDA device: " << reason;
    if (GetParam().dtype == DType::BF16 && harness().bf16_tolerance <= 0) {
      GTEST_SKIP() << op_case().op << " takes no bf16 (no bf16_tolerance)";
    }
  }
  const OpCase& op_case() const { return GetParam().op_case; }
  const OpHarness& harness() const { return op_harness(op_case().op); }
  double tolerance() const {
    return GetParam().dtype == DType::BF16 ? harness().bf16_tolerance
                                           : harness().cuda_f32_tolerance;
  }
};

TEST_P(CudaOpCase, Forward) {
  const OpHarness& h = harness();
  const Inputs in = inputs_for(h.make_inputs(op_case(), 17), GetParam().dtype);
  Tensor gpu;
  const std::string missing = missing_kernel([&] { gpu = h.forward(op_case(), in.gpu); });
  if (!missing.empty()) GTEST_SKIP() << missing;
  ASSERT_TRUE(gpu.device().is_cuda()) << "the harness made the output on " << gpu.device();
  const Tensor cpu = h.forward(op_case(), in.cpu);
  expect_close(to_values(to_host(gpu)), to_values(cpu), tolerance(), GetParam().label() + " forward");
}

TEST_P(CudaOpCase, Backward) {
  const OpHarness& h = harness();
  if (!h.backward) GTEST_SKIP() << op_case().op << " has no backward";
  const Inputs in = inputs_for(h.make_inputs(op_case(), 23), GetParam().dtype);
  Tensor out;
  std::string missing = missing_kernel([&] { out = h.forward(op_case(), in.gpu); });
  if (!missing.empty()) GTEST_SKIP() << missing;
  const Tensor dy = stored_as(random_tensor(out.shape(), 29), out.dtype());
  std::vector<Tensor> gpu;
  missing = missing_kernel(
      [&] { gpu = h.backward(op_case(), in.gpu, to_device(dy, Device::cuda(0))); });
  if (!missing.empty()) GTEST_SKIP() << missing;
  const std::vector<Tensor> cpu = h.backward(op_case(), in.cpu, f32_copy(dy));
  ASSERT_EQ(gpu.size(), in.gpu.size());
  ASSERT_EQ(cpu.size(), in.cpu.size());
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (!h.differentiable[i]) continue;
    expect_close(to_values(to_host(gpu[i])), to_values(cpu[i]), tolerance(),
                 GetParam().label() + " d" + h.input_names[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(Rows, CudaOpCase, ::testing::ValuesIn(cuda_rows()),
                         [](const ::testing::TestParamInfo<CudaOpRow>& info) {
                           return info.param.label();
                         });

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA

// cuda_tests also holds the ops room's harness files and, with them, their CPU tests
// (test/CMakeLists.txt). CTest lists from it only the tests that TITAN_CUDA_TESTS_FILTER
// selects; this checks that the filter selects exactly the tests defined in the cuda/ and
// nccl/ folders of test/unit, so none is lost and none of the ops room's runs twice.
namespace {

bool glob_matches(const char* pattern, const char* name) {
  if (*pattern == '\0') return *name == '\0';
  if (*pattern == '*') {
    return glob_matches(pattern + 1, name) || (*name != '\0' && glob_matches(pattern, name + 1));
  }
  return *pattern == *name && glob_matches(pattern + 1, name + 1);
}

// GoogleTest's positive filter: patterns separated by ':', '*' matching any characters.
bool filter_selects(const std::string& filter, const std::string& name) {
  for (size_t start = 0;;) {
    const size_t end = filter.find(':', start);
    if (glob_matches(filter.substr(start, end - start).c_str(), name.c_str())) return true;
    if (end == std::string::npos) return false;
    start = end + 1;
  }
}

TEST(CudaTests, CtestFilterSelectsExactlyTheGpuFoldersTests) {
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  int in_gpu_folders = 0;
  for (int s = 0; s < unit.total_test_suite_count(); ++s) {
    const ::testing::TestSuite& suite = *unit.GetTestSuite(s);
    for (int t = 0; t < suite.total_test_count(); ++t) {
      const ::testing::TestInfo& info = *suite.GetTestInfo(t);
      const std::string name = std::string(suite.name()) + "." + info.name();
      const std::string file = info.file();
      const std::string in_unit = file.substr(std::min(file.rfind("unit/"), file.size()));
      const bool here = in_unit.find("/cuda/") != std::string::npos ||
                        in_unit.find("/nccl/") != std::string::npos;
      in_gpu_folders += here;
      EXPECT_EQ(filter_selects(TITAN_CUDA_TESTS_FILTER, name), here)
          << name << " (" << info.file() << ") against the filter " << TITAN_CUDA_TESTS_FILTER;
    }
  }
  EXPECT_GT(in_gpu_folders, 0);
}

}  // namespace

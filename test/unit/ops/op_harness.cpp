// The harness registry of the op-case table (op_harness.h). Linked into ops_tests, which
// runs the rows on the CPU (op_case_test.cpp), and into cuda_tests, which runs them on the
// GPU against the CPU (test/unit/ops/cuda/op_case_cuda_test.cpp).
#include <map>
#include <sstream>

#include "op_harness.h"
#include "titan/core/float_formats.h"

namespace titan::testing {

std::string OpCase::label() const {
  const std::vector<int64_t> values = std::visit([](const auto& d) { return d.values(); }, dims);
  std::ostringstream os;
  os << op;
  for (size_t i = 0; i < values.size(); ++i) os << (i ? "x" : "_") << values[i];
  if (flags) os << "_f" << flags;
  return os.str();
}

namespace {
std::map<std::string, OpHarness>& registry() {
  static std::map<std::string, OpHarness> harnesses;
  return harnesses;
}
}  // namespace

bool register_op_harness(const std::string& op, OpHarness harness) {
  registry()[op] = std::move(harness);
  return true;
}

const OpHarness& op_harness(const std::string& op) {
  auto it = registry().find(op);
  if (it == registry().end()) throw Error("no harness registered for op " + op);
  return it->second;
}

Tensor stored_as(const Tensor& host, DType dtype) {
  if (host.dtype() != DType::F32 || dtype != DType::BF16) return host;
  Tensor rounded = Tensor::empty(host.shape(), DType::BF16);
  const float* src = host.data<float>();
  bf16_t* dst = rounded.mutable_data<bf16_t>();
  for (int64_t i = 0; i < host.numel(); ++i) dst[i] = bf16_from_f32(src[i]);
  return rounded;
}

Tensor f32_copy(const Tensor& host) {
  return host.dtype() == DType::BF16 ? from_values(to_values(host), host.shape()) : host;
}

}  // namespace titan::testing

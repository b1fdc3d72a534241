// For GPU tests: whether a CUDA device can be used here, so each test can skip saying why.
// Include only from code built with CUDA (TITAN_HAVE_CUDA).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "titan/core/copy.h"
#include "titan/core/tensor.h"

namespace titan::testing {

// Empty when a CUDA device can be used; otherwise why not (the runtime's own words).
inline std::string cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(status);
  }
  if (count == 0) return "cudaGetDeviceCount found 0 devices";
  return "";
}

// A host copy of a (device) tensor, same dtype and shape.
inline Tensor to_host(const Tensor& t) {
  Tensor host = Tensor::empty(t.shape(), t.dtype());
  copy_tensor(t, host);
  return host;
}

// Bitwise comparison of two host tensors; names the first differing byte.
inline void expect_same_bytes(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.bytes(), expected.bytes()) << what;
  const auto* a = static_cast<const uint8_t*>(actual.raw_data());
  const auto* e = static_cast<const uint8_t*>(expected.raw_data());
  for (int64_t i = 0; i < actual.bytes(); ++i) {
    ASSERT_EQ(a[i], e[i]) << what << ": first difference at byte " << i << " of " << actual.bytes();
  }
}

}  // namespace titan::testing

// First line of a GPU test: skips, giving the runtime's reason, where no device can be used.
#define SKIP_WITHOUT_CUDA_DEVICE()                                                     \
  do {                                                                                 \
    const std::string titan_no_cuda_reason_ = ::titan::testing::cuda_unavailable_reason(); \
    if (!titan_no_cuda_reason_.empty()) GTEST_SKIP() << "no CUDA device: " << titan_no_cuda_reason_; \
  } while (0)

// For GPU tests: whether a CUDA device can be used here, so each test can skip saying why.
// Include only from code built with CUDA (TITAN_HAVE_CUDA).
#pragma once

#include <cuda_runtime.h>

#include <string>

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

}  // namespace titan::testing

// First line of a GPU test: skips, giving the runtime's reason, where no device can be used.
#define SKIP_WITHOUT_CUDA_DEVICE()                                                     \
  do {                                                                                 \
    const std::string titan_no_cuda_reason_ = ::titan::testing::cuda_unavailable_reason(); \
    if (!titan_no_cuda_reason_.empty()) GTEST_SKIP() << "no CUDA device: " << titan_no_cuda_reason_; \
  } while (0)

// What the CUDA backend's cuBLASLt calls share (ops/cuda/matmul.cu, ops/cuda/float8_gemm.cu):
// one handle and one workspace per device, and descriptors that free themselves. Include
// only from .cu files of ops/cuda.
//
// Each device's handle and 32 MiB workspace are made on first use and kept for the life of
// the process (freeing them at exit would race the driver's own teardown). The workspace is
// cudaMalloc'd directly, not through the counted allocator, so that tests asserting on
// tensor memory do not see it. Every call is queued on the device's compute stream
// (core/cuda/launch.h), so one workspace per device is enough.
#pragma once

#include <cublasLt.h>

#include <cstddef>
#include <cstdint>

#include "titan/core/cuda/cuda_check.h"

namespace titan::ops::cuda {

inline constexpr size_t kCublasLtWorkspaceBytes = size_t(32) << 20;

struct CublasLtDevice {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;  // kCublasLtWorkspaceBytes
};
// The handle and workspace of device `device_index` (ops/cuda/matmul.cu).
const CublasLtDevice& cublaslt_device(int device_index);

// cuBLASLt descriptors, destroyed on every path out (an error throws).
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() { if (desc) cublasLtMatmulDescDestroy(desc); }
};
struct Layout {
  cublasLtMatrixLayout_t layout = nullptr;
  ~Layout() { if (layout) cublasLtMatrixLayoutDestroy(layout); }
};
struct Preference {
  cublasLtMatmulPreference_t preference = nullptr;
  ~Preference() { if (preference) cublasLtMatmulPreferenceDestroy(preference); }
};

// The largest power of two (at most 256) that divides the address. Views made by narrow()
// can start anywhere, and cuBLASLt's heuristics assume 256-byte alignment unless told.
inline uint32_t alignment_bytes(const void* ptr) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// The heuristic's preference: the device workspace's size and the alignment of the matrices
// cuBLASLt sees as A, B and C (D is C).
inline void make_preference(Preference& out, const void* lt_a, const void* lt_b,
                            const void* lt_c) {
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&out.preference));
  const uint64_t workspace_bytes = kCublasLtWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(out.preference,
                                                    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace_bytes, sizeof(workspace_bytes)));
  const uint32_t align_a = alignment_bytes(lt_a), align_b = alignment_bytes(lt_b),
                 align_c = alignment_bytes(lt_c);
  const struct {
    cublasLtMatmulPreferenceAttributes_t attribute;
    const uint32_t* bytes;
  } alignments[] = {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a},
                    {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b},
                    {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c},
                    {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c}};
  for (const auto& a : alignments) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(out.preference, a.attribute, a.bytes,
                                                      sizeof(*a.bytes)));
  }
}

}  // namespace titan::ops::cuda

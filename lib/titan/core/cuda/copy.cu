// CUDA side of core/copy.h. With unified addressing cudaMemcpyDefault finds the direction
// from the pointers; the copy runs with the CUDA side's device current.
#include "titan/core/copy.h"
#include "titan/core/cuda/cuda_check.h"

namespace titan::detail {

void copy_bytes_cuda(const void* src, Device src_device, void* dst, Device dst_device,
                     int64_t bytes) {
  const int index = dst_device.is_cuda() ? dst_device.index : src_device.index;
  int previous = 0;
  CUDA_CHECK(cudaGetDevice(&previous));
  if (index != previous) CUDA_CHECK(cudaSetDevice(index));
  cudaError_t status;
  if (src_device.is_cuda() && dst_device.is_cuda() && src_device.index != dst_device.index) {
    status = cudaMemcpyPeer(dst, dst_device.index, src, src_device.index, size_t(bytes));
  } else {
    // cudaMemcpy returns once a device-to-host copy has landed and orders after earlier
    // work on the default stream, so results of queued ops are complete when read.
    status = cudaMemcpy(dst, src, size_t(bytes), cudaMemcpyDefault);
  }
  if (index != previous) cudaSetDevice(previous);
  CUDA_CHECK(status);
}

}  // namespace titan::detail

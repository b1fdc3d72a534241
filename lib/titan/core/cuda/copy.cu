// CUDA side of core/copy.h. With unified addressing cudaMemcpyDefault finds the direction
// from the pointers; the copy runs with the CUDA side's device current.
//
// Ordering: a copy is queued on that device's compute stream (launch.h), after the kernels
// queued there before it. When one side is the host, the host waits for it, so a tensor
// copied back holds the results of the ops that wrote it and a host buffer may be reused at
// once. A copy within one device does not wait: it is ordered like a kernel, before the
// ops queued after it, and the caching allocator reuses its blocks in the same stream order
// (blocks another stream reads are marked with record_stream). (cudaMemcpy on the legacy
// stream would order the same way, the compute stream being a blocking stream; naming the
// stream keeps that true under --default-stream per-thread too.) A copy between two devices
// uses cudaMemcpyPeer, which is ordered after all work queued on either device.
#include "titan/core/copy.h"
#include "titan/core/cuda/cuda_check.h"
#include "titan/core/cuda/launch.h"

namespace titan::detail {

void copy_bytes_cuda(const void* src, Device src_device, void* dst, Device dst_device,
                     int64_t bytes) {
  const int index = dst_device.is_cuda() ? dst_device.index : src_device.index;
  const bool peer =
      src_device.is_cuda() && dst_device.is_cuda() && src_device.index != dst_device.index;
  cudaStream_t stream = peer ? nullptr : cuda::compute_stream(index);  // any device current
  int previous = 0;
  CUDA_CHECK(cudaGetDevice(&previous));
  if (index != previous) CUDA_CHECK(cudaSetDevice(index));
  cudaError_t status;
  if (peer) {
    status = cudaMemcpyPeer(dst, dst_device.index, src, src_device.index, size_t(bytes));
  } else {
    status = cudaMemcpyAsync(dst, src, size_t(bytes), cudaMemcpyDefault, stream);
    const bool host_side = !src_device.is_cuda() || !dst_device.is_cuda();
    if (status == cudaSuccess && host_side) status = cudaStreamSynchronize(stream);
  }
  if (index != previous) cudaSetDevice(previous);
  CUDA_CHECK(status);
}

// Queued on the compute stream like a kernel: ordered before the ops that read the zeros,
// no host wait.
void zero_bytes_cuda(void* dst, Device device, int64_t bytes) {
  cudaStream_t stream = cuda::compute_stream(device.index);
  int previous = 0;
  CUDA_CHECK(cudaGetDevice(&previous));
  if (device.index != previous) CUDA_CHECK(cudaSetDevice(device.index));
  const cudaError_t status = cudaMemsetAsync(dst, 0, size_t(bytes), stream);
  if (device.index != previous) cudaSetDevice(previous);
  CUDA_CHECK(status);
}

}  // namespace titan::detail

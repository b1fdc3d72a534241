// What every CUDA kernel launch in the project uses: the stream ops queue on, the grid for
// n elements, and the check after a launch; plus the device's communication stream and the
// events that order the two.
//
//   const int threads = 256;
//   my_kernel<<<grid_for(n, threads), threads, 0, compute_stream()>>>(...);
//   check_launch("my_kernel");
//
// Streams. Each device has two, made on first use and kept for the life of the process
// (destroying them from static destructors would race the runtime's own teardown):
//   - compute_stream(): where every op, cuBLASLt call and core/copy.h copy queues. It is a
//     *blocking* stream (cudaStreamDefault, not cudaStreamNonBlocking), so it stays ordered
//     with the legacy default stream: a plain cudaMemcpy or cudaMemset (stream 0) waits for
//     the kernels queued on it before, and kernels queued after wait for the copy. The
//     allocator (cuda_allocator.h) hands out blocks for this stream.
//   - communication_stream(): where every NCCL communicator of the device runs
//     (distributed/nccl/). Non-blocking, so a cudaMemcpy on stream 0 never waits for a collective
//     that waits for a peer. One stream for all groups of a device: collectives of different
//     groups run in the order the rank issued them (the same order on every rank), so two of
//     them never hold the GPU waiting for each other.
// Between the two, events: after `record_event(e, compute_stream())`, a
// `stream_wait_event(communication_stream(), e)` makes the collectives queued next see the
// finished inputs, and the other way round hands results back, without blocking the host.
// Everything here can be called from host C++ (.cpp) as well as from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "titan/core/cuda/cuda_check.h"

namespace titan::cuda {

// The streams of device `device`, or of the current device (cudaGetDevice).
cudaStream_t compute_stream(int device);
cudaStream_t communication_stream(int device);
cudaStream_t compute_stream();
cudaStream_t communication_stream();

// An event for ordering streams (cudaEventDisableTiming: no timestamps, cheapest to record
// and wait on), on the current device. The caller destroys it (cudaEventDestroy).
cudaEvent_t create_event();
// `event` := the work queued on `stream` so far (cudaEventRecord).
void record_event(cudaEvent_t event, cudaStream_t stream);
// Work queued on `waiter` from now on starts after `event`'s latest record has completed;
// the host does not wait (cudaStreamWaitEvent).
void stream_wait_event(cudaStream_t waiter, cudaEvent_t event);
// record_event + stream_wait_event through an event of the calling thread: `waiter` waits
// for the work queued on `producer` so far. Both streams on the current device.
void stream_wait_stream(cudaStream_t waiter, cudaStream_t producer);

// Blocks of `threads` covering n elements, at least 1 and at most the grid's x limit
// (kernels stride over the rest).
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 32) {
  const int64_t blocks = (std::max<int64_t>(n, 1) + threads - 1) / threads;
  return unsigned(std::min(blocks, max_blocks));
}

// Makes a device current for a scope and restores the previous one: ops launch on their
// tensors' device whichever device the calling thread had current.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    CUDA_CHECK(cudaGetDevice(&previous_));
    if (index != previous_) CUDA_CHECK(cudaSetDevice(index));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }  // best effort: never throw from a destructor
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// The status of a polling query (cudaEventQuery, cudaStreamQuery). Its "not yet" answer,
// cudaErrorNotReady, is also left in the runtime's last-error slot, where the next
// check_launch (cudaGetLastError) would report it as that kernel's failure: it is cleared
// here, and nothing else is.
inline cudaError_t polled(cudaError_t status) {
  if (status == cudaErrorNotReady && cudaPeekAtLastError() == cudaErrorNotReady) {
    cudaGetLastError();
  }
  return status;
}
inline bool event_done(cudaEvent_t event) { return polled(cudaEventQuery(event)) == cudaSuccess; }

// Throws naming the kernel when its launch failed (bad configuration, no device).
inline void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  TITAN_CHECK(status == cudaSuccess) << kernel << " launch: " << cudaGetErrorString(status);
}

}  // namespace titan::cuda

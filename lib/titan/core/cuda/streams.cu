// The compute and communication streams of each device, and the event helpers (launch.h).
#include <mutex>

#include "titan/core/cuda/launch.h"

namespace titan::cuda {
namespace {

constexpr int kMaxDevices = 64;

struct DeviceStreams {
  std::once_flag made;
  cudaStream_t compute = nullptr;
  cudaStream_t communication = nullptr;
};

// Made once per device (a failed attempt throws and is retried by the next call); never
// destroyed, see launch.h.
DeviceStreams& streams_of(int device) {
  static DeviceStreams table[kMaxDevices];
  TITAN_CHECK(device >= 0 && device < kMaxDevices) << "bad CUDA device " << device;
  DeviceStreams& streams = table[device];
  std::call_once(streams.made, [&] {
    int previous = 0;
    CUDA_CHECK(cudaGetDevice(&previous));
    if (previous != device) CUDA_CHECK(cudaSetDevice(device));
    cudaError_t status = cudaStreamCreateWithFlags(&streams.compute, cudaStreamDefault);
    if (status == cudaSuccess) {
      status = cudaStreamCreateWithFlags(&streams.communication, cudaStreamNonBlocking);
    }
    if (previous != device) cudaSetDevice(previous);
    CUDA_CHECK(status);
  });
  return streams;
}

int current_device() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

}  // namespace

cudaStream_t compute_stream(int device) { return streams_of(device).compute; }
cudaStream_t communication_stream(int device) { return streams_of(device).communication; }
cudaStream_t compute_stream() { return compute_stream(current_device()); }
cudaStream_t communication_stream() { return communication_stream(current_device()); }

cudaEvent_t create_event() {
  cudaEvent_t event = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return event;
}

void record_event(cudaEvent_t event, cudaStream_t stream) {
  CUDA_CHECK(cudaEventRecord(event, stream));
}

void stream_wait_event(cudaStream_t waiter, cudaEvent_t event) {
  CUDA_CHECK(cudaStreamWaitEvent(waiter, event, 0));
}

// A fresh event each time: destroying it right after the wait is allowed (the runtime frees
// it once the wait is done), and it keeps this free of per-thread, per-device state.
void stream_wait_stream(cudaStream_t waiter, cudaStream_t producer) {
  cudaEvent_t event = create_event();
  const cudaError_t recorded = cudaEventRecord(event, producer);
  const cudaError_t waited = recorded == cudaSuccess ? cudaStreamWaitEvent(waiter, event, 0)
                                                     : recorded;
  cudaEventDestroy(event);
  CUDA_CHECK(waited);
}

}  // namespace titan::cuda

#include "titan/core/device_select.h"

#include "titan/config.h"

#if TITAN_HAVE_CUDA
#include "titan/core/cuda/cuda_check.h"
#endif

namespace titan {

int select_cuda_device(int local_rank) {
#if TITAN_HAVE_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // no driver or no device: a CPU run, and no sticky error left behind
    return -1;
  }
  const int device = local_rank % count;
  CUDA_CHECK(cudaSetDevice(device));
  return device;
#else
  (void)local_rank;
  return -1;
#endif
}

}  // namespace titan

// Which GPU this process uses: local rank modulo the devices it can see (launch notes,
// "Node discovery"). Under `srun --gpus-per-task=1` each task sees one device, so this picks
// device 0 there.
#pragma once

namespace titan {

// Calls cudaSetDevice(local_rank % count) and returns that device; -1 on a build without
// CUDA or a machine without a GPU (then nothing is set).
int select_cuda_device(int local_rank);

}  // namespace titan

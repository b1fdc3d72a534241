// Stream-aware reuse of device memory (core/cuda/cuda_allocator.cu has the whole story).
//
//   Tensor buffer = Tensor::empty({n}, DType::BF16, Device::cuda(0));
//   ... queue work that reads `buffer` on communication_stream() ...
//   titan::cuda::record_stream(buffer, communication_stream());
//   buffer = Tensor();   // freed now; reused only once that work is done
#pragma once

#include <cuda_runtime.h>

#include "titan/core/tensor.h"

namespace titan::cuda {

// The memory of `tensor` (a CUDA tensor, or a view of one) is used by work queued on
// `stream`, a stream other than its device's compute stream. When its block is freed, the
// allocator records an event on `stream` and hands the block out again only once that
// event has completed. Recording the compute stream is a no-op (blocks are handed out for
// it, so its own work is ordered already).
void record_stream(const Tensor& tensor, cudaStream_t stream);

}  // namespace titan::cuda

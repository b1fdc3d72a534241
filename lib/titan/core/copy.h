// Moving tensor values between tensors and devices.
//
//   Tensor host = ...;                                  // f32 on the CPU
//   Tensor dev = to_device(host, Device::cuda(0));      // a new CUDA tensor, same values
//   copy_tensor(dev, host);                             // and back into an existing tensor
//
// Copies are bytes: same dtype and shape on both sides, no conversion. CPU <-> CPU works in
// every build; anything that touches a CUDA tensor needs a build with CUDA (TITAN_HAVE_CUDA)
// and fails with a message saying so otherwise. CUDA copies are queued on the device's
// compute stream (after the ops queued before them) and return when the bytes are in place,
// so the host can read a copied-back tensor.
#pragma once

#include "titan/build_config.h"
#include "titan/core/tensor.h"

namespace titan {

// dst = src, element for element. src and dst may be on different devices.
void copy_tensor(const Tensor& src, Tensor& dst);

// A new tensor on `device` holding src's values (a copy even when src is already there).
Tensor to_device(const Tensor& src, Device device);

// `t` on `device`: t itself when it is there already (or undefined), else a copy.
Tensor on_device(const Tensor& t, Device device);

#if TITAN_HAVE_CUDA
namespace detail {
// Byte copy where at least one side is a CUDA device (core/cuda/copy.cu).
void copy_bytes_cuda(const void* src, Device src_device, void* dst, Device dst_device,
                     int64_t bytes);
// Zero bytes on a CUDA device (Tensor::zero_ of a device tensor).
void zero_bytes_cuda(void* dst, Device device, int64_t bytes);
}  // namespace detail
#endif

}  // namespace titan

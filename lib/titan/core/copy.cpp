#include "titan/core/copy.h"

#include <cstring>

#include "titan/core/allocator.h"

namespace titan {

void copy_tensor(const Tensor& src, Tensor& dst) {
  TITAN_CHECK(src.defined() && dst.defined()) << "copy_tensor: undefined tensor";
  TITAN_CHECK(src.dtype() == dst.dtype())
      << "copy_tensor: " << dtype_name(src.dtype()) << " into " << dtype_name(dst.dtype())
      << "; copies do not convert";
  TITAN_CHECK(src.shape() == dst.shape()) << "copy_tensor: shape " << shape_string(src.shape())
                                          << " into " << shape_string(dst.shape());
  if (src.bytes() == 0 || !writes_memory(src.bytes())) return;
  if (src.device().is_cpu() && dst.device().is_cpu()) {
    std::memmove(dst.raw_mutable_data(), src.raw_data(), size_t(src.bytes()));
    return;
  }
#if TITAN_HAVE_CUDA
  detail::copy_bytes_cuda(src.raw_data(), src.device(), dst.raw_mutable_data(), dst.device(),
                          src.bytes());
#else
  TITAN_FAIL() << "copy_tensor " << src.device() << " -> " << dst.device()
               << ": this build has no CUDA (TITAN_CUDA=OFF or nvcc not found)";
#endif
}

Tensor to_device(const Tensor& src, Device device) {
  TITAN_CHECK(src.defined()) << "to_device: undefined tensor";
  Tensor dst = Tensor::empty(src.shape(), src.dtype(), device);
  copy_tensor(src, dst);
  return dst;
}

Tensor on_device(const Tensor& t, Device device) {
  return !t.defined() || t.device() == device ? t : to_device(t, device);
}

}  // namespace titan

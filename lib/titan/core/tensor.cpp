#include "titan/core/tensor.h"

#include <cstring>
#include <sstream>

#include "titan/core/allocator.h"
#include "titan/core/copy.h"

namespace titan {

std::string shape_string(const Shape& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Storage::Storage(Allocator& allocator, int64_t bytes)
    : allocator_(allocator), bytes_(bytes), data_(allocator.allocate(bytes)) {}

Storage::~Storage() { allocator_.deallocate(data_, bytes_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t s : shape) TITAN_CHECK(s >= 0) << "negative size in shape " << shape_string(shape);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(allocator_for(device), t.bytes());
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

int64_t Tensor::size(int d) const {
  const int n = dim();
  if (d < 0) d += n;
  TITAN_CHECK(d >= 0 && d < n) << "dim " << d << " out of range for shape " << shape_string(shape_);
  return shape_[size_t(d)];
}

const void* Tensor::raw_data() const {
  TITAN_CHECK(defined()) << "access to an undefined tensor";
  return static_cast<const char*>(storage_->data()) + offset_bytes_;
}

void* Tensor::raw_mutable_data() {
  TITAN_CHECK(defined()) << "access to an undefined tensor";
  return static_cast<char*>(storage_->data()) + offset_bytes_;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape resolved = shape;
  int inferred = -1;
  int64_t known = 1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      TITAN_CHECK(inferred < 0) << "reshape " << shape_string(shape) << ": more than one -1";
      inferred = int(i);
    } else {
      known *= resolved[i];
    }
  }
  if (inferred >= 0) {
    TITAN_CHECK(known > 0 && numel() % known == 0)
        << "cannot reshape " << shape_string(shape_) << " to " << shape_string(shape);
    resolved[size_t(inferred)] = numel() / known;
  }
  TITAN_CHECK(shape_numel(resolved) == numel())
      << "cannot reshape " << shape_string(shape_) << " to " << shape_string(shape);
  Tensor t = *this;
  t.shape_ = resolved;
  return t;
}

Tensor Tensor::narrow(int64_t start, int64_t length) const {
  TITAN_CHECK(dim() >= 1) << "narrow of a 0-d tensor";
  TITAN_CHECK(start >= 0 && length >= 0 && start + length <= shape_[0])
      << "narrow(" << start << ", " << length << ") out of range for shape " << shape_string(shape_);
  Tensor t = *this;
  const int64_t row_bytes = shape_[0] ? bytes() / shape_[0] : 0;
  t.offset_bytes_ += start * row_bytes;
  t.shape_[0] = length;
  return t;
}

Tensor Tensor::flatten_to_2d() const {
  TITAN_CHECK(dim() >= 1) << "flatten of a 0-d tensor";
  return reshape({-1, shape_.back()});
}

void Tensor::zero_() {
  if (numel() == 0 || !writes_memory(bytes())) return;
  if (device().is_cuda()) {
#if TITAN_HAVE_CUDA
    detail::zero_bytes_cuda(raw_mutable_data(), device(), bytes());
    return;
#endif
  }
  TITAN_CHECK(device().is_cpu()) << "zero_ on " << device() << " needs the device backend";
  std::memset(raw_mutable_data(), 0, size_t(bytes()));
}

void Tensor::check_dtype(DType expected) const {
  TITAN_CHECK(dtype_ == expected) << "tensor holds " << dtype_name(dtype_) << ", accessed as "
                                  << dtype_name(expected);
}

void check_shape(const Tensor& t, const Shape& expected, const char* op, const char* arg) {
  TITAN_CHECK(t.defined()) << op << ": " << arg << " is undefined";
  TITAN_CHECK(t.shape() == expected) << op << ": " << arg << " has shape " << shape_string(t.shape())
                                     << ", expected " << shape_string(expected);
}

void check_dtype(const Tensor& t, DType expected, const char* op, const char* arg) {
  TITAN_CHECK(t.defined()) << op << ": " << arg << " is undefined";
  TITAN_CHECK(t.dtype() == expected) << op << ": " << arg << " is " << dtype_name(t.dtype())
                                     << ", expected " << dtype_name(expected);
}

}  // namespace titan

// Tensor: dtype + shape + device + shared storage (+ byte offset). Always row-major and
// contiguous; the only views are reshape() and narrow() on dim 0, which share storage.
//
//   Tensor x = Tensor::empty({B, T, D}, DType::F32);   // counted by the CPU allocator
//   float* p = x.mutable_data<float>();                 // writes are visible at the call
//   Tensor row = x.narrow(1, 1);                        // the second batch entry, no copy
//
// Copying a Tensor copies the handle, not the bytes (like torch.Tensor).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "titan/core/allocator.h"
#include "titan/core/device.h"
#include "titan/core/dtype.h"
#include "titan/core/error.h"

namespace titan {

using Shape = std::vector<int64_t>;

std::string shape_string(const Shape& shape);
int64_t shape_numel(const Shape& shape);

// One allocation, returned to its allocator when the last tensor using it goes away.
class Storage {
 public:
  Storage(Allocator& allocator, int64_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  Device device() const { return allocator_.device(); }

 private:
  Allocator& allocator_;
  int64_t bytes_;
  void* data_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  const Shape& shape() const { return shape_; }
  int dim() const { return int(shape_.size()); }
  int64_t size(int d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  int64_t bytes() const { return numel() * dtype_bytes(dtype_); }

  const void* raw_data() const;
  void* raw_mutable_data();
  // Typed access checks that T matches the dtype.
  template <class T>
  const T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<const T*>(raw_data());
  }
  template <class T>
  T* mutable_data() {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(raw_mutable_data());
  }

  Tensor reshape(const Shape& shape) const;  // same numel; one dim may be -1
  Tensor narrow(int64_t start, int64_t length) const;  // rows [start, start+length) of dim 0
  Tensor flatten_to_2d() const;  // [..., n] -> [prod(...), n]

  // Fills every element with zero bits (0.0 for every float format, 0 for integers).
  void zero_();
  bool shares_storage_with(const Tensor& other) const { return storage_ == other.storage_; }

 private:
  void check_dtype(DType expected) const;
  std::shared_ptr<Storage> storage_;
  int64_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

// Input validation shared by ops: names the op and the argument.
void check_shape(const Tensor& t, const Shape& expected, const char* op, const char* arg);
void check_dtype(const Tensor& t, DType expected, const char* op, const char* arg);

}  // namespace titan

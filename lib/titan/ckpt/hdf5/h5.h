// A thin layer over the HDF5 C API: owning handles, the error check, and the float types
// the checkpoints store (docs/checkpoints.md). HDF5 1.10 here is not
// thread-safe: one thread makes every HDF5 call.
//
//   H5Object file(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)));
//   int64_t step = read_int_attribute(file.id(), "step");
//   H5Object bf16 = float_type(H5Float::BF16);                  // closed when it goes away
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "titan/core/error.h"
#include "titan/core/tensor.h"

namespace titan::ckpt::h5 {

// HDF5 calls return a negative value (or H5I_INVALID_HID) on failure; the automatic error
// stack printing is switched off (silence_error_stack), so the message names the call.
#define H5_CHECK(call)                                                             \
  ([&]() {                                                                         \
    auto h5_result_ = (call);                                                      \
    TITAN_CHECK(h5_result_ >= 0) << "HDF5: " #call " failed";                      \
    return h5_result_;                                                             \
  }())

// Turns off HDF5's printing of its error stack to stderr (failures become our errors).
void silence_error_stack();

// An hid_t closed with the right H5*close when it goes away.
class H5Object {
 public:
  H5Object() = default;
  explicit H5Object(hid_t id) : id_(id) {}
  H5Object(H5Object&& other) noexcept : id_(other.release()) {}
  H5Object& operator=(H5Object&& other) noexcept;
  H5Object(const H5Object&) = delete;
  H5Object& operator=(const H5Object&) = delete;
  ~H5Object() { close(); }

  hid_t id() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() {
    const hid_t id = id_;
    id_ = H5I_INVALID_HID;
    return id;
  }
  void close();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Stored float types: IEEE f32 little-endian, and bfloat16 as an HDF5 float type with
// bf16's fields (sign bit 15, exponent 8 bits at 7, bias 127, mantissa 7 bits) so that
// h5ls/h5dump print numbers and h5py reads floats.
enum class H5Float { F32, BF16 };
H5Object float_type(H5Float kind);
// DType of a dataset's stored type (F32 or BF16); InputError for anything else.
DType stored_dtype(hid_t dataset, const std::string& name);

// Scalar attributes on a file, group or dataset. Reading a missing attribute throws
// InputError naming it.
void write_int_attribute(hid_t object, const char* name, int64_t value);
void write_string_attribute(hid_t object, const char* name, const std::string& value);
bool has_attribute(hid_t object, const char* name);
int64_t read_int_attribute(hid_t object, const char* name);
std::string read_string_attribute(hid_t object, const char* name);

// Every dataset below `group` (recursively), as paths relative to it, in creation order of
// traversal (HDF5's name order within a group).
std::vector<std::string> list_datasets(hid_t group);
// Global shape of a dataset.
Shape dataset_shape(hid_t dataset);

}  // namespace titan::ckpt::h5

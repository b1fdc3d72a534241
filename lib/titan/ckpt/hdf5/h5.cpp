#include "titan/ckpt/hdf5/h5.h"

namespace titan::ckpt::h5 {

void silence_error_stack() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

H5Object& H5Object::operator=(H5Object&& other) noexcept {
  if (this != &other) {
    close();
    id_ = other.release();
  }
  return *this;
}

void H5Object::close() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = H5I_INVALID_HID;
}

H5Object float_type(H5Float kind) {
  H5Object type(H5_CHECK(H5Tcopy(H5T_IEEE_F32LE)));
  if (kind == H5Float::BF16) {
    // bf16 is the upper half of an f32: same sign and exponent, 7 mantissa bits.
    H5_CHECK(H5Tset_fields(type.id(), 15, 7, 8, 0, 7));
    H5_CHECK(H5Tset_size(type.id(), 2));
    H5_CHECK(H5Tset_ebias(type.id(), 127));
  }
  return type;
}

DType stored_dtype(hid_t dataset, const std::string& name) {
  H5Object type(H5_CHECK(H5Dget_type(dataset)));
  TITAN_CHECK_INPUT(H5Tget_class(type.id()) == H5T_FLOAT)
      << name << ": stored as a non-float type; titan.cpp checkpoints hold float32 or bfloat16";
  const size_t size = H5Tget_size(type.id());
  if (size == 4) return DType::F32;
  TITAN_CHECK_INPUT(size == 2) << name << ": a " << size * 8 << "-bit float, expected 32 or 16";
  size_t sign = 0, exponent_position = 0, exponent_size = 0, mantissa_position = 0,
         mantissa_size = 0;
  H5_CHECK(H5Tget_fields(type.id(), &sign, &exponent_position, &exponent_size,
                         &mantissa_position, &mantissa_size));
  TITAN_CHECK_INPUT(exponent_size == 8 && mantissa_size == 7)
      << name << ": a 16-bit float that is not bfloat16 (exponent " << exponent_size
      << " bits, mantissa " << mantissa_size << ")";
  return DType::BF16;
}

void write_int_attribute(hid_t object, const char* name, int64_t value) {
  H5Object space(H5_CHECK(H5Screate(H5S_SCALAR)));
  if (H5Aexists(object, name) > 0) H5_CHECK(H5Adelete(object, name));
  H5Object attribute(H5_CHECK(H5Acreate2(object, name, H5T_STD_I64LE, space.id(), H5P_DEFAULT, H5P_DEFAULT)));
  H5_CHECK(H5Awrite(attribute.id(), H5T_NATIVE_INT64, &value));
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  H5Object type(H5_CHECK(H5Tcopy(H5T_C_S1)));
  H5_CHECK(H5Tset_size(type.id(), H5T_VARIABLE));
  H5_CHECK(H5Tset_cset(type.id(), H5T_CSET_UTF8));
  H5Object space(H5_CHECK(H5Screate(H5S_SCALAR)));
  if (H5Aexists(object, name) > 0) H5_CHECK(H5Adelete(object, name));
  H5Object attribute(H5_CHECK(H5Acreate2(object, name, type.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT)));
  const char* text = value.c_str();
  H5_CHECK(H5Awrite(attribute.id(), type.id(), &text));
}

bool has_attribute(hid_t object, const char* name) { return H5Aexists(object, name) > 0; }

int64_t read_int_attribute(hid_t object, const char* name) {
  TITAN_CHECK_INPUT(has_attribute(object, name)) << "attribute '" << name << "' is missing";
  H5Object attribute(H5_CHECK(H5Aopen(object, name, H5P_DEFAULT)));
  int64_t value = 0;
  TITAN_CHECK_INPUT(H5Aread(attribute.id(), H5T_NATIVE_INT64, &value) >= 0)
      << "attribute '" << name << "' is not an integer";
  return value;
}

std::string read_string_attribute(hid_t object, const char* name) {
  TITAN_CHECK_INPUT(has_attribute(object, name)) << "attribute '" << name << "' is missing";
  H5Object attribute(H5_CHECK(H5Aopen(object, name, H5P_DEFAULT)));
  H5Object type(H5_CHECK(H5Tcopy(H5T_C_S1)));
  H5_CHECK(H5Tset_size(type.id(), H5T_VARIABLE));
  H5_CHECK(H5Tset_cset(type.id(), H5T_CSET_UTF8));
  char* text = nullptr;
  TITAN_CHECK_INPUT(H5Aread(attribute.id(), type.id(), &text) >= 0)
      << "attribute '" << name << "' is not a string";
  std::string value = text ? text : "";
  H5Object space(H5_CHECK(H5Aget_space(attribute.id())));
  H5Dvlen_reclaim(type.id(), space.id(), H5P_DEFAULT, &text);
  return value;
}

namespace {

herr_t collect_dataset(hid_t, const char* name, const H5O_info_t* info, void* out) {
  if (info->type == H5O_TYPE_DATASET) static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

}  // namespace

std::vector<std::string> list_datasets(hid_t group) {
  std::vector<std::string> names;
  // H5Ovisit1: Debian's HDF5 1.10 maps the unnumbered names to the 1.8 API.
  H5_CHECK(H5Ovisit1(group, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names));
  return names;
}

Shape dataset_shape(hid_t dataset) {
  H5Object space(H5_CHECK(H5Dget_space(dataset)));
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.id()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank), 0);
  H5_CHECK(H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr));
  return Shape(dims.begin(), dims.end());
}

}  // namespace titan::ckpt::h5

#include "titan/ckpt/hdf5/model_file.h"

#include <filesystem>

#include "titan/build_config.h"
#include "titan/ckpt/checkpoint_folder.h"
#include "titan/ckpt/hdf5/inspect.h"

namespace titan::ckpt {
namespace {

// distributed::Mesh::describe() of a one-rank mesh: the writer is one process.
constexpr const char* kOneRankMesh = "pp 1 x dp_replicate 1 x dp_shard 1 x cp 1 x tp 1";

}  // namespace

ModelFileWriter::ModelFileWriter(std::string path, const ModelFileAttributes& attributes)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp") {
  h5::silence_error_stack();
  // Attributes over 64 KiB (a long config_yaml) need the 1.8 object format at least.
  h5::H5Object access(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)));
  H5_CHECK(H5Pset_libver_bounds(access.id(), H5F_LIBVER_V18, H5F_LIBVER_LATEST));
  file_ = h5::H5Object(H5Fcreate(tmp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.id()));
  TITAN_CHECK(file_.valid()) << "checkpoint " << tmp_path_ << ": cannot create it";
  h5::H5Object root(H5_CHECK(H5Gopen2(file_.id(), "/", H5P_DEFAULT)));
  const hid_t r = root.id();
  h5::write_string_attribute(r, "format", kFormatName);
  h5::write_int_attribute(r, "format_version", kFormatVersion);
  h5::write_int_attribute(r, "step", attributes.step);
  h5::write_int_attribute(r, "tokens_seen", attributes.tokens_seen);
  h5::write_int_attribute(r, "optimizer_steps", attributes.step);
  h5::write_int_attribute(r, "data_sequences", 0);
  h5::write_int_attribute(r, "seed", attributes.seed);
  h5::write_int_attribute(r, "model_only", 1);
  h5::write_string_attribute(r, "config_yaml", attributes.config_yaml);
  h5::write_string_attribute(r, "mesh", kOneRankMesh);
  h5::write_int_attribute(r, "world_size", 1);
  h5::write_string_attribute(r, "library_version", TITAN_VERSION);
}

ModelFileWriter::~ModelFileWriter() {
  if (finished_) return;
  file_.close();
  std::error_code ignored;
  std::filesystem::remove(tmp_path_, ignored);
}

void ModelFileWriter::add(const std::string& fqn, const Tensor& value) {
  TITAN_CHECK(!finished_) << "checkpoint " << path_ << ": add after finish";
  TITAN_CHECK(value.device().is_cpu()) << "checkpoint " << path_ << ": " << fqn << " is not on the CPU";
  TITAN_CHECK(value.dtype() == DType::F32 || value.dtype() == DType::BF16)
      << "checkpoint " << path_ << ": " << fqn << " is " << dtype_name(value.dtype())
      << "; model tensors are float32 or bfloat16";
  const bool bf16 = value.dtype() == DType::BF16;
  h5::H5Object type = h5::float_type(bf16 ? h5::H5Float::BF16 : h5::H5Float::F32);
  const std::vector<hsize_t> dims(value.shape().begin(), value.shape().end());
  h5::H5Object space(H5_CHECK(dims.empty() ? H5Screate(H5S_SCALAR)
                                           : H5Screate_simple(int(dims.size()), dims.data(), nullptr)));
  h5::H5Object links(H5_CHECK(H5Pcreate(H5P_LINK_CREATE)));
  H5_CHECK(H5Pset_create_intermediate_group(links.id(), 1));  // "model/" on the first add
  const std::string name = "model/" + fqn;
  h5::H5Object dataset(H5_CHECK(
      H5Dcreate2(file_.id(), name.c_str(), type.id(), space.id(), links.id(), H5P_DEFAULT, H5P_DEFAULT)));
  if (value.numel() > 0) {
    H5_CHECK(H5Dwrite(dataset.id(), type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, value.raw_data()));
  }
  h5::write_string_attribute(dataset.id(), "dtype", bf16 ? "bfloat16" : "float32");
}

void ModelFileWriter::finish() {
  TITAN_CHECK(!finished_) << "checkpoint " << path_ << ": finish called twice";
  {
    h5::H5Object root(H5_CHECK(H5Gopen2(file_.id(), "/", H5P_DEFAULT)));
    h5::write_int_attribute(root.id(), "complete", 1);  // last: the file is whole from here
  }
  H5_CHECK(H5Fclose(file_.release()));  // checked: buffered writes land here
  sync_file(tmp_path_, "checkpoint");
  publish_file(tmp_path_, path_, "checkpoint");
  finished_ = true;
}

}  // namespace titan::ckpt

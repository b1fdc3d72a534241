// The HDF5 side of ckpt/checkpoint_file.h (docs/checkpoints.md): one
// contiguous dataset per tensor with its global shape, every rank moving its box as a
// hyperslab in collective transfers, memory type equal to file type so MPI-IO stays
// collective (bf16 is converted here, not by HDF5).
#include "titan/ckpt/checkpoint_file.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "titan/build_config.h"
#include "titan/ckpt/checkpoint_folder.h"
#include "titan/ckpt/hdf5/h5.h"
#include "titan/core/float_formats.h"
#include "titan/core/trace.h"
#if TITAN_HAVE_MPI
#include "titan/distributed/mpi/mpi_communicator.h"
#endif

namespace titan::ckpt {
namespace {

using h5::H5Object;

// File access: MPI-IO over the I/O communicator when it is an MPI one, else serial.
H5Object file_access(distributed::Communicator& io) {
  H5Object fapl(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)));
  // V18 lower bound: attributes over 64 KiB (the config YAML) need it.
  H5_CHECK(H5Pset_libver_bounds(fapl.id(), H5F_LIBVER_V18, H5F_LIBVER_LATEST));
#if TITAN_HAVE_MPI
  if (auto* mpi = dynamic_cast<distributed::MpiCommunicator*>(&io)) {
    H5_CHECK(H5Pset_fapl_mpio(fapl.id(), mpi->handle(), MPI_INFO_NULL));
    H5_CHECK(H5Pset_all_coll_metadata_ops(fapl.id(), true));
    H5_CHECK(H5Pset_coll_metadata_write(fapl.id(), true));
    return fapl;
  }
#endif
  TITAN_CHECK(io.size() == 1) << "checkpoint I/O over " << io.name() << " (" << io.size()
                              << " ranks) needs an MPI communicator";
  return fapl;
}

H5Object collective_transfer(distributed::Communicator& io) {
  H5Object dxpl(H5_CHECK(H5Pcreate(H5P_DATASET_XFER)));
#if TITAN_HAVE_MPI
  if (dynamic_cast<distributed::MpiCommunicator*>(&io)) {
    H5_CHECK(H5Pset_dxpl_mpio(dxpl.id(), H5FD_MPIO_COLLECTIVE));
  }
#else
  (void)io;
#endif
  return dxpl;
}

H5Object simple_space(const Shape& shape) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return H5Object(H5_CHECK(H5Screate_simple(int(dims.size()), dims.data(), nullptr)));
}

// The file space with this rank's box selected (or nothing), and the matching memory space.
struct Selection {
  H5Object file_space, memory_space;
};

Selection select_box(hid_t dataset, const nn::Box& box, bool active) {
  Selection s;
  s.file_space = H5Object(H5_CHECK(H5Dget_space(dataset)));
  if (!active || shape_numel(box.extent) == 0) {
    H5_CHECK(H5Sselect_none(s.file_space.id()));
    const hsize_t one = 1;
    s.memory_space = H5Object(H5_CHECK(H5Screate_simple(1, &one, nullptr)));
    H5_CHECK(H5Sselect_none(s.memory_space.id()));
    return s;
  }
  std::vector<hsize_t> start(box.offset.begin(), box.offset.end());
  std::vector<hsize_t> count(box.extent.begin(), box.extent.end());
  H5_CHECK(H5Sselect_hyperslab(s.file_space.id(), H5S_SELECT_SET, start.data(), nullptr,
                               count.data(), nullptr));
  s.memory_space = simple_space(box.extent);
  return s;
}

const char* dtype_label(DType d) { return d == DType::BF16 ? "bfloat16" : "float32"; }

void write_meta(hid_t file, const CheckpointMeta& m) {
  h5::write_string_attribute(file, "format", kFormatName);
  h5::write_int_attribute(file, "format_version", kFormatVersion);
  h5::write_int_attribute(file, "step", m.step);
  h5::write_int_attribute(file, "tokens_seen", m.tokens_seen);
  h5::write_int_attribute(file, "optimizer_steps", m.optimizer_steps);
  h5::write_int_attribute(file, "data_sequences", m.data_sequences);
  h5::write_int_attribute(file, "seed", m.seed);
  h5::write_int_attribute(file, "model_only", m.model_only ? 1 : 0);
  h5::write_string_attribute(file, "config_yaml", m.config_yaml);
  h5::write_string_attribute(file, "mesh", m.mesh);
  h5::write_int_attribute(file, "world_size", m.world_size);
  h5::write_string_attribute(file, "library_version", TITAN_VERSION);
}

// Opens a checkpoint for reading; InputError naming the file when HDF5 cannot.
H5Object open_for_reading(const std::string& path, distributed::Communicator& io) {
  h5::silence_error_stack();
  TITAN_CHECK_INPUT(std::filesystem::exists(path)) << "checkpoint " << path << " does not exist";
  H5Object fapl = file_access(io);
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.id());
  TITAN_CHECK_INPUT(file >= 0) << "checkpoint " << path
                               << " is not a readable HDF5 file (truncated, or not a checkpoint); "
                                  "move it away or pick another with checkpoint.load_step";
  return H5Object(file);
}

}  // namespace

std::string checkpoint_library_version() {
  unsigned major = 0, minor = 0, release = 0;
  if (H5get_libversion(&major, &minor, &release) < 0) return "built (version unknown)";
  const std::string text = std::to_string(major) + "." + std::to_string(minor) + "." +
                           std::to_string(release);
#ifdef H5_HAVE_PARALLEL
  return text + " (parallel)";
#else
  return text + " (serial)";
#endif
}

CheckpointIoCounters& checkpoint_io_counters() {
  static CheckpointIoCounters counters;
  return counters;
}

namespace {

// write_checkpoint_file without the clean-up of a failed write.
void write_and_publish(const std::string& path, const std::string& temporary,
                       distributed::Communicator& io, const CheckpointMeta& meta,
                       const std::vector<TensorPiece>& pieces) {
  {
    H5Object fapl = file_access(io);
    const hid_t file_id = H5Fcreate(temporary.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id());
    TITAN_CHECK(file_id >= 0) << "cannot create checkpoint " << temporary
                              << " (is the folder writable?)";
    H5Object file(file_id);
    // Tests: a write that fails once the file exists, as a full disk or an I/O error does.
    TITAN_CHECK(std::getenv("TITAN_TEST_CHECKPOINT_WRITE_FAILS") == nullptr)
        << "checkpoint " << temporary << ": write failed (TITAN_TEST_CHECKPOINT_WRITE_FAILS)";
    H5Object lcpl(H5_CHECK(H5Pcreate(H5P_LINK_CREATE)));
    H5_CHECK(H5Pset_create_intermediate_group(lcpl.id(), 1));
    H5Object dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE)));
    H5_CHECK(H5Pset_fill_time(dcpl.id(), H5D_FILL_TIME_NEVER));
    H5Object dxpl = collective_transfer(io);
    const H5Object f32 = h5::float_type(h5::H5Float::F32), bf16 = h5::float_type(h5::H5Float::BF16);
    for (const TensorPiece& piece : pieces) {
      TITAN_CHECK(piece.local.dtype() == DType::F32 && piece.local.shape() == piece.box.extent)
          << piece.path << ": local piece " << shape_string(piece.local.shape())
          << " does not match its box " << shape_string(piece.box.extent);
      const bool as_bf16 = piece.stored == DType::BF16;
      const hid_t type = as_bf16 ? bf16.id() : f32.id();
      H5Object space = simple_space(piece.global_shape);
      H5Object dataset(H5_CHECK(H5Dcreate2(file.id(), piece.path.c_str(), type, space.id(),
                                           lcpl.id(), dcpl.id(), H5P_DEFAULT)));
      h5::write_string_attribute(dataset.id(), "dtype", dtype_label(piece.stored));
      const bool active = piece.writes && piece.local.numel() > 0;
      Selection s = select_box(dataset.id(), piece.box, active);
      std::vector<bf16_t> narrowed;
      const void* data = active ? piece.local.raw_data() : nullptr;
      if (active && as_bf16) {
        const float* f = piece.local.data<float>();
        narrowed.resize(size_t(piece.local.numel()));
        for (size_t i = 0; i < narrowed.size(); ++i) narrowed[i] = bf16_from_f32(f[i]);
        data = narrowed.data();
      }
      H5_CHECK(H5Dwrite(dataset.id(), type, s.memory_space.id(), s.file_space.id(), dxpl.id(), data));
      if (active) {
        checkpoint_io_counters().bytes_written += piece.local.numel() * (as_bf16 ? 2 : 4);
      }
    }
    write_meta(file.id(), meta);
    // Last: a file without it is not a checkpoint, whatever else it holds.
    h5::write_int_attribute(file.id(), "complete", 1);
  }  // closed on every rank before the rename
  sync_file(temporary, "checkpoint");  // every rank: its writes are on the disk
  io.barrier().wait();
  if (io.rank() == 0) publish_file(temporary, path, "checkpoint");
  io.barrier().wait();
}

}  // namespace

void write_checkpoint_file(const std::string& path, distributed::Communicator& io,
                           const CheckpointMeta& meta, const std::vector<TensorPiece>& pieces) {
  h5::silence_error_stack();
  TraceSpan span("checkpoint.write " + path);
  const std::string temporary = path + ".tmp";
  try {
    write_and_publish(path, temporary, io, meta, pieces);
  } catch (...) {  // a failed save leaves no partial file behind (disk full, I/O error)
    std::error_code ignored;
    if (io.rank() == 0) std::filesystem::remove(temporary, ignored);
    throw;
  }
}

CheckpointMeta read_checkpoint_meta(const std::string& path, distributed::Communicator& io) {
  H5Object file = open_for_reading(path, io);
  const hid_t f = file.id();
  TITAN_CHECK_INPUT(h5::has_attribute(f, "format") &&
                    h5::read_string_attribute(f, "format") == kFormatName)
      << "checkpoint " << path << " is not a titan.cpp checkpoint (no format attribute '"
      << kFormatName << "')";
  const int64_t version = h5::read_int_attribute(f, "format_version");
  TITAN_CHECK_INPUT(version == kFormatVersion)
      << "checkpoint " << path << " has format version " << version << "; this build reads "
      << kFormatVersion;
  TITAN_CHECK_INPUT(h5::has_attribute(f, "complete") && h5::read_int_attribute(f, "complete") == 1)
      << "checkpoint " << path << " is incomplete (no 'complete' attribute: its save was "
      << "interrupted); move it away or pick another with checkpoint.load_step";
  CheckpointMeta m;
  m.step = h5::read_int_attribute(f, "step");
  m.tokens_seen = h5::read_int_attribute(f, "tokens_seen");
  m.optimizer_steps = h5::read_int_attribute(f, "optimizer_steps");
  m.data_sequences = h5::read_int_attribute(f, "data_sequences");
  m.seed = h5::read_int_attribute(f, "seed");
  m.model_only = h5::read_int_attribute(f, "model_only") != 0;
  m.config_yaml = h5::read_string_attribute(f, "config_yaml");
  m.mesh = h5::read_string_attribute(f, "mesh");
  m.world_size = h5::read_int_attribute(f, "world_size");
  m.library_version = h5::read_string_attribute(f, "library_version");
  return m;
}

void read_checkpoint_tensors(const std::string& path, distributed::Communicator& io,
                             std::vector<TensorPiece>& pieces) {
  TraceSpan span("checkpoint.read " + path);
  H5Object file = open_for_reading(path, io);
  H5Object dxpl = collective_transfer(io);
  const H5Object f32 = h5::float_type(h5::H5Float::F32), bf16 = h5::float_type(h5::H5Float::BF16);
  for (TensorPiece& piece : pieces) {
    TITAN_CHECK_INPUT(H5Lexists(file.id(), piece.path.c_str(), H5P_DEFAULT) > 0)
        << "checkpoint " << path << " has no tensor " << piece.path
        << " (another model, or a model-only checkpoint)";
    H5Object dataset(H5_CHECK(H5Dopen2(file.id(), piece.path.c_str(), H5P_DEFAULT)));
    const Shape stored_shape = h5::dataset_shape(dataset.id());
    TITAN_CHECK_INPUT(stored_shape == piece.global_shape)
        << "checkpoint " << path << ": " << piece.path << " is " << shape_string(stored_shape)
        << ", this model's is " << shape_string(piece.global_shape);
    const DType stored = h5::stored_dtype(dataset.id(), path + ": " + piece.path);
    TITAN_CHECK(piece.local.dtype() == DType::F32 && piece.local.shape() == piece.box.extent)
        << piece.path << ": local piece " << shape_string(piece.local.shape())
        << " does not match its box " << shape_string(piece.box.extent);
    const bool active = piece.local.numel() > 0;
    Selection s = select_box(dataset.id(), piece.box, active);
    if (stored == DType::F32) {
      H5_CHECK(H5Dread(dataset.id(), f32.id(), s.memory_space.id(), s.file_space.id(), dxpl.id(),
                       active ? piece.local.raw_mutable_data() : nullptr));
    } else {
      std::vector<bf16_t> narrow(size_t(std::max<int64_t>(piece.local.numel(), 1)));
      H5_CHECK(H5Dread(dataset.id(), bf16.id(), s.memory_space.id(), s.file_space.id(), dxpl.id(),
                       narrow.data()));
      float* out = active ? piece.local.mutable_data<float>() : nullptr;
      for (int64_t i = 0; active && i < piece.local.numel(); ++i) out[i] = f32_from_bf16(narrow[size_t(i)]);
    }
    if (active) checkpoint_io_counters().bytes_read += piece.local.numel() * (stored == DType::BF16 ? 2 : 4);
  }
}

}  // namespace titan::ckpt

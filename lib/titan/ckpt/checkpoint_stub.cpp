// A build without HDF5 (TITAN_HDF5=OFF, the GPU-check build) has no checkpoints: the config
// rejects checkpoint.enable there (config/features.cpp), and these say so if reached.
#include "titan/build_config.h"

#if !TITAN_HAVE_HDF5
#include "titan/ckpt/checkpoint_file.h"

namespace titan::ckpt {
namespace {
[[noreturn]] void no_hdf5() {
  TITAN_FAIL() << "checkpoints need a build with parallel HDF5 (TITAN_HDF5=ON)";
}
}  // namespace

std::string checkpoint_library_version() { return "no (checkpoints disabled)"; }

CheckpointIoCounters& checkpoint_io_counters() {
  static CheckpointIoCounters counters;
  return counters;
}
void write_checkpoint_file(const std::string&, distributed::Communicator&, const CheckpointMeta&,
                           const std::vector<TensorPiece>&) { no_hdf5(); }
CheckpointMeta read_checkpoint_meta(const std::string&, distributed::Communicator&) { no_hdf5(); }
void read_checkpoint_tensors(const std::string&, distributed::Communicator&,
                             std::vector<TensorPiece>&) {
  no_hdf5();
}
}  // namespace titan::ckpt
#endif

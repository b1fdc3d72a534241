// Reading and writing one checkpoint file (docs/checkpoints.md): every rank passes the
// same list of tensors, each with its global shape and this rank's box, and HDF5 moves
// each box collectively to or from the tensor's global dataset. A checkpoint written on
// one mesh is read on any other by passing that mesh's boxes.
//
//   std::vector<TensorPiece> pieces = ...;            // model/, optimizer/ of this rank
//   write_checkpoint_file(folder / "step-10.h5", io, meta, pieces);   // collective
//   CheckpointMeta meta = read_checkpoint_meta(path, io);             // InputError if bad
//   read_checkpoint_tensors(path, io, pieces);                        // fills piece.local
//
// `io` is a communicator used only for checkpoint I/O (a split of the world): an MPI one
// gives parallel HDF5 over MPI-IO, a one-rank SelfCommunicator plain serial HDF5. Needs a
// build with HDF5 (TITAN_HAVE_HDF5); otherwise these throw, and the config rejects
// checkpoint.enable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "titan/core/tensor.h"
#include "titan/distributed/communicator.h"
#include "titan/nn/parameter.h"

namespace titan::ckpt {

inline constexpr const char* kFormatName = "titan.cpp checkpoint";
inline constexpr int64_t kFormatVersion = 1;

struct CheckpointMeta {
  int64_t step = 0;
  int64_t tokens_seen = 0;
  int64_t optimizer_steps = 0;
  int64_t data_sequences = 0;  // training sequences consumed, all ranks
  int64_t seed = 0;
  bool model_only = false;
  std::string config_yaml;
  std::string mesh;
  int64_t world_size = 1;
  std::string library_version;
};

struct TensorPiece {
  std::string path;     // "model/layers.0.attention.wq.weight"
  Shape global_shape;
  nn::Box box;          // this rank's piece
  Tensor local;         // F32, shaped box.extent: written from, or read into
  bool writes = true;   // false where another rank (the first replica) writes the same box
  DType stored = DType::F32;  // F32, or BF16 (exports)
};

// Bytes this process moved to and from checkpoint files (box bytes as stored).
struct CheckpointIoCounters {
  int64_t bytes_written = 0;
  int64_t bytes_read = 0;
};
CheckpointIoCounters& checkpoint_io_counters();

// The checkpoint library's version for --version: "1.10.8 (parallel)"; a build without
// HDF5 says that it has no checkpoints.
std::string checkpoint_library_version();

// Writes <path>.tmp, sets `complete` last, closes, then renames it to <path> (rank 0). A
// write that fails removes <path>.tmp (rank 0) before the error goes on.
void write_checkpoint_file(const std::string& path, distributed::Communicator& io,
                           const CheckpointMeta& meta, const std::vector<TensorPiece>& pieces);

// The root attributes; InputError naming the file when it is unreadable, not a titan.cpp
// checkpoint, of an unknown version, or lacks `complete`.
CheckpointMeta read_checkpoint_meta(const std::string& path, distributed::Communicator& io);

// Reads each piece's box (piece.local must be allocated, F32, shaped box.extent). A
// missing tensor or another global shape is an InputError naming the tensor and the file.
void read_checkpoint_tensors(const std::string& path, distributed::Communicator& io,
                             std::vector<TensorPiece>& pieces);

}  // namespace titan::ckpt

// A model-only checkpoint (docs/checkpoints.md, format version 1) written by one process
// with serial HDF5: for tools that make checkpoints outside training (an HF import) and
// for tests. Training writes its checkpoints collectively (the parallel checkpointer).
//
//   ModelFileAttributes attributes;
//   attributes.config_yaml = config::to_yaml(job);
//   ModelFileWriter writer("imported.h5", attributes);   // writes imported.h5.tmp
//   writer.add("tok_embeddings.weight", embedding);      // F32 or BF16, its global shape
//   ...
//   writer.finish();                                     // complete = 1, close, rename
//
// Tensors are written one at a time, so a model larger than memory can be converted. A
// writer destroyed before finish() removes its .tmp file: nothing under the final name
// ever looks whole before it is.
#pragma once

#include <cstdint>
#include <string>

#include "titan/ckpt/hdf5/h5.h"
#include "titan/core/tensor.h"

namespace titan::ckpt {

// The root attributes a model-only file carries besides format, model_only and complete;
// the mesh is one rank's.
struct ModelFileAttributes {
  int64_t step = 0;
  int64_t tokens_seen = 0;
  int64_t seed = 0;
  std::string config_yaml;
};

class ModelFileWriter {
 public:
  // Creates `path`.tmp (replacing a stale one). The parent folder must exist.
  ModelFileWriter(std::string path, const ModelFileAttributes& attributes);
  ~ModelFileWriter();
  ModelFileWriter(const ModelFileWriter&) = delete;
  ModelFileWriter& operator=(const ModelFileWriter&) = delete;

  // Writes model/<fqn>, contiguous, in the tensor's dtype (F32 or BF16, on the CPU) with its
  // `dtype` attribute.
  void add(const std::string& fqn, const Tensor& value);
  // Sets complete = 1, closes, fsyncs and renames the file to `path`.
  void finish();

 private:
  std::string path_, tmp_path_;
  h5::H5Object file_;
  bool finished_ = false;
};

}  // namespace titan::ckpt

// Reading a checkpoint file (docs/checkpoints.md) on one process, for tools and tests:
// what it holds, one tensor at a time, and how two files differ. Serial HDF5 (the default
// file driver): no MPI is needed, and the file is only opened for reading.
//
//   CheckpointInfo info = read_checkpoint_info("outputs/checkpoint/step-10.h5");
//   for (const DatasetInfo& d : info.datasets) log::info("%s %s", d.path.c_str(), ...);
//   Tensor w = read_whole_dataset(info.path, "model/norm.weight");   // F32, bf16 widened
//   CheckpointDiff diff = diff_checkpoints("a.h5", "b.h5");
//   std::fputs(format_checkpoint_diff(diff).c_str(), stdout);         // ends "max abs diff: X"
//
// A file that is missing, not HDF5, without `format` == "titan.cpp checkpoint", with a
// format_version other than 1, without `complete` == 1 or without one of version 1's root
// attributes throws InputError naming the file and the problem (exit 2). The header names
// no HDF5 type (tools include it); open_checkpoint.h has the forms on an open file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "titan/ckpt/checkpoint_file.h"  // kFormatName, kFormatVersion
#include "titan/core/tensor.h"

namespace titan::ckpt {

struct DatasetInfo {
  std::string path;  // from the root, e.g. "model/layers.0.attention.wq.weight"
  Shape shape;       // the global shape
  DType dtype;       // as stored: F32 or BF16 for tensors; I64, I32 or U8 for other state
};

struct CheckpointInfo {
  std::string path;
  int64_t format_version = 0;
  int64_t step = 0;
  int64_t tokens_seen = 0;
  int64_t optimizer_steps = 0;
  int64_t data_sequences = 0;
  int64_t seed = 0;
  int64_t model_only = 0;
  int64_t world_size = 0;
  std::string mesh;
  std::string config_yaml;
  std::string library_version;
  std::vector<DatasetInfo> datasets;  // every dataset in the file, in HDF5's name order

  const DatasetInfo* find(const std::string& dataset_path) const;  // null if absent
};

CheckpointInfo read_checkpoint_info(const std::string& path);

// The whole dataset as a new F32 CPU tensor of its global shape (bf16 widened exactly).
// InputError naming the file and dataset if it is absent or not a float tensor.
Tensor read_whole_dataset(const std::string& path, const std::string& dataset);

// How two checkpoints differ: their tensors compared element by element, in A's order.
struct TensorDifference {
  std::string path;
  Shape shape_a, shape_b;  // compared only when equal
  DType dtype_a, dtype_b;
  double max_abs = 0;  // max |a - b|; inf where only one side is NaN or the shapes differ
  double max_rel = 0;  // max |a - b| / max(|a|, |b|), 0 where both are 0
};
struct CheckpointDiff {
  std::string path_a, path_b;
  std::vector<std::string> attributes;  // "step: 10 vs 0", one per differing root attribute
  std::vector<TensorDifference> tensors;
  std::vector<std::string> only_in_a, only_in_b;
  double max_abs = 0;  // over every compared tensor
};
CheckpointDiff diff_checkpoints(const std::string& path_a, const std::string& path_b);

// How much of config_yaml `titan-ckpt info` prints: its model section (what the tensors'
// shapes follow from), all of it, or nothing.
enum class ConfigShown { Model, All, None };
// What `titan-ckpt info` prints: the attributes, the config as asked, then every dataset
// with its global shape and stored dtype.
std::string format_checkpoint_info(const CheckpointInfo& info, ConfigShown config);
// What `titan-ckpt diff` prints: differing attributes, one row per tensor, the tensors in one
// file only, and a last line "max abs diff: X".
std::string format_checkpoint_diff(const CheckpointDiff& diff);

}  // namespace titan::ckpt

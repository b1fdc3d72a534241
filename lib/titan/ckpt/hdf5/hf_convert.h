// Checkpoint <-> Hugging Face folder (safetensors + config.json), as `titan-ckpt export` and
// `titan-ckpt import` do it, for any model family: names, value layouts (Llama's RoPE row
// order) and config.json come from the family's HfStateDictAdapter (models/family.h); the
// file formats from ckpt/safetensors.h and docs/checkpoints.md.
//
//   HfExportOptions options;
//   options.out_dir = "hf/";
//   options.dtype = DType::BF16;
//   HfExportReport r = export_hf_safetensors("outputs/checkpoint/step-100.h5", options);
//
//   HfImportOptions in;
//   in.hf_dir = "hf/";
//   in.out = "imported.h5";
//   in.flavor = "tiny";                               // or nullopt: the closest flavor
//   HfImportReport s = import_hf_safetensors(in);
//
// Export folder: config.json and model.safetensors, or, when the tensors exceed
// max_shard_bytes, model-0000K-of-0000N.safetensors plus model.safetensors.index.json
// ({"metadata": {"total_size": bytes}, "weight_map": {name: file}}). A tied model has no
// lm_head.weight. Model files of an earlier export in the folder that this one did not write
// are removed, so the folder never mixes two exports. The model comes from the checkpoint's
// config_yaml (model.name, model.* and training.seq_len); every model/ tensor must be one of
// that model's parameters with its shape, or InputError names the first that is not.
//
// Import reads config.json (its model_type picks the family) and the safetensors (F32, BF16
// or F16) and writes a step-0 model-only checkpoint in float32 whose config_yaml records the
// flavor and overrides (the adapter's job_config_from_hf). Every tensor must be there with
// the shape config.json implies, or InputError names the first that is not. The output must
// not exist.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/core/progress.h"
#include "titan/core/tensor.h"

namespace titan::ckpt {

struct HfExportOptions {
  std::string out_dir;
  DType dtype = DType::F32;                      // F32 or BF16
  int64_t max_shard_bytes = 5'000'000'000;       // tensor bytes per file, as HF's "5GB"
  // Told (tensors converted, all tensors) after each tensor; (all, all) once every file is
  // written. titan-ckpt passes progress_callback("export", "tensors").
  ProgressCallback progress;
};

struct HfExportReport {
  std::vector<std::string> files;  // written, in the folder, config.json last
  int64_t tensors = 0;
  int64_t total_bytes = 0;         // the tensors' bytes (the index's total_size)
};

HfExportReport export_hf_safetensors(const std::string& checkpoint_path, const HfExportOptions& options);

struct HfImportOptions {
  std::string hf_dir;
  std::string out;
  std::optional<std::string> flavor;
  ProgressCallback progress;  // as HfExportOptions::progress
};

struct HfImportReport {
  config::JobConfig config;  // what config_yaml records
  int64_t tensors = 0;
};

HfImportReport import_hf_safetensors(const HfImportOptions& options);

}  // namespace titan::ckpt

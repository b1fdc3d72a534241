#include "titan/ckpt/hdf5/hf_convert.h"

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "titan/ckpt/hdf5/inspect.h"
#include "titan/ckpt/hdf5/model_file.h"
#include "titan/ckpt/hdf5/open_checkpoint.h"
#include "titan/ckpt/safetensors.h"
#include "titan/config/load.h"
#include "titan/core/copy.h"
#include "titan/models/registry.h"
#include "titan/ops/cast.h"

namespace titan::ckpt {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// HF's shard names: model-00001-of-00003.safetensors.
std::string shard_name(size_t index, size_t count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

bool is_model_file(const std::string& name) {
  static const std::regex shard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  return name == kSingleFile || name == kIndexFile || std::regex_match(name, shard);
}

// Writes text under its final name only once whole (tmp + rename), as the safetensors do.
void write_text_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    TITAN_CHECK(out.good()) << tmp.string() << ": cannot write it";
  }
  std::error_code error;
  fs::rename(tmp, path, error);
  TITAN_CHECK(!error) << path.string() << ": cannot rename " << tmp.string() << " to it: " << error.message();
}

nlohmann::json read_json_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  TITAN_CHECK_INPUT(in.good()) << path.string() << ": cannot be read (missing?)";
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& error) {
    throw InputError(path.string() + ": not valid JSON: " + error.what());
  }
}

Tensor converted(const Tensor& t, DType dtype) {
  if (t.dtype() == dtype) return t;
  Tensor out = Tensor::empty(t.shape(), dtype);
  ops::cast(t, out);
  return out;
}

// The job config a checkpoint records (config_yaml, the same parser as a job's YAML), its
// model checked by the model's family.
config::JobConfig config_of_checkpoint(const CheckpointInfo& info) {
  const std::string origin = "checkpoint " + info.path + " config_yaml";
  try {
    config::JobConfig config;
    config::apply_yaml_text(config, info.config_yaml, origin);
    models::model_family(config.model.name).summarize(config);
    return config;
  } catch (const InputError& error) {
    const std::string message = error.what();
    throw InputError(message.rfind(origin, 0) == 0 ? message : origin + ": " + message);
  }
}

// What the model stores under model/: its parameters, then its buffers (DeepSeek V3's
// routing biases).
std::vector<models::ParameterShape> model_state(const models::ModelFamily& family,
                                                const config::JobConfig& config) {
  std::vector<models::ParameterShape> state = family.parameter_shapes(config);
  for (models::ParameterShape& buffer : family.buffer_shapes(config)) {
    state.push_back(std::move(buffer));
  }
  return state;
}

// Shape without its first dim: one HF tensor of a stacked one.
Shape row_shape(const Shape& shape) { return Shape(shape.begin() + 1, shape.end()); }

// DeepSeek's published FP8 weights: e4m3 values whose b0 x b1 blocks (the edge ones
// smaller) each scale by their entry of <name>_scale_inv [ceil(rows / b0), ceil(cols / b1)].
Tensor dequantize_fp8_blocks(const Tensor& weight, const Tensor& scale_inv,
                             const std::array<int64_t, 2>& block, const std::string& what) {
  TITAN_CHECK_INPUT(weight.dim() == 2)
      << what << ": an F8_E4M3 tensor must be a 2-D weight, got " << shape_string(weight.shape());
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const Shape blocks{(rows + block[0] - 1) / block[0], (cols + block[1] - 1) / block[1]};
  TITAN_CHECK_INPUT(scale_inv.shape() == blocks)
      << what << "_scale_inv is " << shape_string(scale_inv.shape()) << ", the "
      << block[0] << " x " << block[1] << " blocks of " << shape_string(weight.shape())
      << " need " << shape_string(blocks);
  Tensor out = Tensor::empty(weight.shape(), DType::F32);
  ops::cast(weight, out);
  const Tensor scales = converted(scale_inv, DType::F32);
  float* o = out.mutable_data<float>();
  const float* s = scales.data<float>();
  for (int64_t i = 0; i < rows; ++i) {
    const float* row_scales = s + (i / block[0]) * blocks[1];
    for (int64_t j = 0; j < cols; ++j) o[i * cols + j] *= row_scales[j / block[1]];
  }
  return out;
}

// Every model/ dataset is a parameter (or buffer) of the model with its shape, and every
// one is there.
void check_model_tensors(const CheckpointInfo& info,
                         const std::vector<models::ParameterShape>& parameters) {
  std::set<std::string> expected;
  for (const auto& [name, shape] : parameters) {
    expected.insert("model/" + name);
    const DatasetInfo* d = info.find("model/" + name);
    TITAN_CHECK_INPUT(d != nullptr)
        << "checkpoint " << info.path << ": lacks model/" << name
        << ", a parameter of the model its config_yaml describes";
    TITAN_CHECK_INPUT(d->shape == shape)
        << "checkpoint " << info.path << ": model/" << name << " is " << shape_string(d->shape)
        << ", the model its config_yaml describes has " << shape_string(shape);
  }
  for (const DatasetInfo& d : info.datasets) {
    TITAN_CHECK_INPUT(d.path.rfind("model/", 0) != 0 || expected.count(d.path) > 0)
        << "checkpoint " << info.path << ": " << d.path
        << " is not part of the model its config_yaml describes";
  }
}

// Consecutive parameters per file, each file's bytes at most `limit` unless one tensor alone
// is larger (it then gets a file of its own), as HF's shard_checkpoint splits.
std::vector<std::vector<size_t>> plan_shards(const std::vector<int64_t>& bytes, int64_t limit) {
  std::vector<std::vector<size_t>> shards(1);
  int64_t in_shard = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (!shards.back().empty() && in_shard + bytes[i] > limit) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += bytes[i];
  }
  return shards;
}

// The safetensors files of an HF folder and which holds each tensor.
struct HfFolder {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const SafetensorsFile*> tensors;
};

HfFolder open_hf_folder(const fs::path& dir) {
  std::vector<std::string> names;
  std::map<std::string, std::string> weight_map;
  if (fs::exists(dir / kIndexFile)) {
    const nlohmann::json index = read_json_file(dir / kIndexFile);
    TITAN_CHECK_INPUT(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object())
        << (dir / kIndexFile).string() << ": no \"weight_map\" object";
    std::set<std::string> seen;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      TITAN_CHECK_INPUT(file.is_string())
          << (dir / kIndexFile).string() << ": weight_map[\"" << tensor << "\"] is not a file name";
      weight_map[tensor] = file.get<std::string>();
      if (seen.insert(file.get<std::string>()).second) names.push_back(file.get<std::string>());
    }
  } else {
    TITAN_CHECK_INPUT(fs::exists(dir / kSingleFile))
        << dir.string() << ": holds neither " << kSingleFile << " nor " << kIndexFile;
    names.push_back(kSingleFile);
  }
  HfFolder folder;
  for (const std::string& name : names) {
    folder.files.push_back(std::make_unique<SafetensorsFile>(read_safetensors((dir / name).string())));
    const SafetensorsFile* file = folder.files.back().get();
    for (const std::string& tensor : file->names()) {
      TITAN_CHECK_INPUT(folder.tensors.emplace(tensor, file).second)
          << dir.string() << ": " << tensor << " is in two files";
    }
  }
  for (const auto& [tensor, name] : weight_map) {
    const auto it = folder.tensors.find(tensor);
    TITAN_CHECK_INPUT(it != folder.tensors.end() && fs::path(it->second->path()).filename() == name)
        << (dir / kIndexFile).string() << ": " << tensor << " is not in " << name;
  }
  return folder;
}

}  // namespace

HfExportReport export_hf_safetensors(const std::string& checkpoint_path, const HfExportOptions& options) {
  TITAN_CHECK_INPUT(options.dtype == DType::F32 || options.dtype == DType::BF16)
      << "--dtype: export writes float32 or bfloat16";
  TITAN_CHECK_INPUT(options.max_shard_bytes > 0)
      << "--max-shard-bytes: must be positive, got " << options.max_shard_bytes;
  const CheckpointInfo info = read_checkpoint_info(checkpoint_path);
  const config::JobConfig config = config_of_checkpoint(info);
  const models::ModelFamily& family = models::model_family(config.model.name);
  const models::HfStateDictAdapter& adapter = family.hf_adapter();
  const std::vector<models::ParameterShape> parameters = model_state(family, config);
  check_model_tensors(info, parameters);

  std::vector<int64_t> bytes;
  HfExportReport report;
  for (const auto& [name, shape] : parameters) {
    bytes.push_back(shape_numel(shape) * dtype_bytes(options.dtype));
    report.total_bytes += bytes.back();
  }
  const std::vector<std::vector<size_t>> shards = plan_shards(bytes, options.max_shard_bytes);
  const fs::path out = options.out_dir;
  fs::create_directories(out);

  const h5::H5Object file = open_checkpoint(checkpoint_path);
  const int64_t tensor_count = int64_t(parameters.size());
  int64_t converted_count = 0;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = shards.size() == 1 ? kSingleFile : shard_name(s, shards.size());
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (size_t i : shards[s]) {
      const std::string& fqn = parameters[i].name;
      const Tensor stored = read_whole_dataset(file.id(), checkpoint_path, "model/" + fqn);
      const Tensor value = adapter.to_hf(fqn, stored, config);
      const std::vector<std::string> hf_names = adapter.to_hf_names(fqn, config);
      for (size_t row = 0; row < hf_names.size(); ++row) {  // one name, or one per row
        const Tensor piece = hf_names.size() == 1
                                 ? value
                                 : value.narrow(int64_t(row), 1).reshape(row_shape(value.shape()));
        tensors.emplace_back(hf_names[row], converted(piece, options.dtype));
        weight_map[hf_names[row]] = name;
      }
      // done == total is the last call, made once every file is written.
      ++converted_count;
      if (options.progress && converted_count < tensor_count) options.progress(converted_count, tensor_count);
    }
    write_safetensors((out / name).string(), tensors);
    report.files.push_back(name);
    report.tensors += int64_t(tensors.size());
  }
  if (shards.size() > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", report.total_bytes}};
    index["weight_map"] = weight_map;
    write_text_file(out / kIndexFile, index.dump(2) + "\n");
    report.files.push_back(kIndexFile);
  }
  const std::string torch_dtype = options.dtype == DType::BF16 ? "bfloat16" : "float32";
  write_text_file(out / "config.json", adapter.hf_config(config, torch_dtype).dump(2) + "\n");
  report.files.push_back("config.json");

  const std::set<std::string> written(report.files.begin(), report.files.end());
  for (const fs::directory_entry& entry : fs::directory_iterator(out)) {
    const std::string name = entry.path().filename().string();
    if (is_model_file(name) && written.count(name) == 0) fs::remove(entry.path());
  }
  if (options.progress) options.progress(tensor_count, tensor_count);
  return report;
}

HfImportReport import_hf_safetensors(const HfImportOptions& options) {
  const fs::path dir = options.hf_dir;
  TITAN_CHECK_INPUT(fs::is_directory(dir)) << dir.string() << ": no such folder";
  TITAN_CHECK_INPUT(!fs::exists(options.out))
      << "--out " << options.out << ": exists; import never replaces a file, choose another path";
  const fs::path config_path = dir / "config.json";
  const nlohmann::json config_json = read_json_file(config_path);
  const models::ModelFamily& family =
      models::model_family_for_hf(config_json, config_path.string());
  const models::HfStateDictAdapter& adapter = family.hf_adapter();
  HfImportReport report;
  report.config = adapter.job_config_from_hf(config_json, config_path.string(), options.flavor);
  const std::vector<models::ParameterShape> parameters = model_state(family, report.config);
  // FP8 weights (DeepSeek's published checkpoints): quantization_config's block size.
  std::array<int64_t, 2> block{128, 128};
  if (config_json.contains("quantization_config") &&
      config_json["quantization_config"].contains("weight_block_size")) {
    const nlohmann::json& size = config_json["quantization_config"]["weight_block_size"];
    TITAN_CHECK_INPUT(size.is_array() && size.size() == 2 && size[0].is_number_integer() &&
                      size[1].is_number_integer() && size[0].get<int64_t>() > 0 &&
                      size[1].get<int64_t>() > 0)
        << config_path.string() << ": quantization_config.weight_block_size must be two "
        << "positive integers";
    block = {size[0].get<int64_t>(), size[1].get<int64_t>()};
  }

  const HfFolder folder = open_hf_folder(dir);
  std::set<std::string> expected;
  for (const auto& [name, shape] : parameters) {
    const std::vector<std::string> hf_names = adapter.to_hf_names(name, report.config);
    const Shape piece_shape = hf_names.size() == 1 ? shape : row_shape(shape);
    TITAN_CHECK(hf_names.size() == 1 || int64_t(hf_names.size()) == shape[0])
        << name << ": " << hf_names.size() << " HF tensors for " << shape_string(shape);
    for (const std::string& hf_name : hf_names) {
      expected.insert(hf_name);
      const auto it = folder.tensors.find(hf_name);
      TITAN_CHECK_INPUT(it != folder.tensors.end())
          << dir.string() << ": lacks " << hf_name << " (" << name << ")";
      const SafetensorsEntry& entry = it->second->entry(hf_name);
      TITAN_CHECK_INPUT(entry.shape == piece_shape)
          << it->second->path() << ": " << hf_name << " is " << shape_string(entry.shape)
          << ", config.json's model has " << shape_string(piece_shape);
      if (entry.dtype == DType::F8E4M3) {  // its scales come with it
        const std::string scales = hf_name + "_scale_inv";
        TITAN_CHECK_INPUT(folder.tensors.count(scales) > 0)
            << it->second->path() << ": " << hf_name << " is F8_E4M3 without " << scales;
        expected.insert(scales);
        continue;
      }
      TITAN_CHECK_INPUT(entry.dtype == DType::F32 || entry.dtype == DType::BF16 ||
                        entry.dtype == DType::F16)
          << it->second->path() << ": " << hf_name << " is "
          << safetensors_dtype_name(entry.dtype) << "; import reads F32, BF16, F16 or F8_E4M3 "
          << "with its _scale_inv blocks";
    }
  }
  for (const auto& [hf_name, file] : folder.tensors) {
    TITAN_CHECK_INPUT(expected.count(hf_name) > 0 ||
                      adapter.skipped_on_import(hf_name, report.config))
        << file->path() << ": " << hf_name << " is not a weight of the model config.json describes";
  }

  if (fs::path(options.out).has_parent_path()) fs::create_directories(fs::path(options.out).parent_path());
  ModelFileAttributes attributes;
  attributes.config_yaml = config::to_yaml(report.config);
  attributes.seed = int64_t(report.config.debug.effective_seed());
  ModelFileWriter writer(options.out, attributes);
  // One HF tensor in float32, dequantized when it is FP8.
  auto read = [&](const std::string& hf_name) {
    const SafetensorsFile& file = *folder.tensors.at(hf_name);
    const Tensor stored = file.tensor(hf_name);
    if (stored.dtype() != DType::F8E4M3) return converted(stored, DType::F32);
    const std::string scales = hf_name + "_scale_inv";
    return dequantize_fp8_blocks(stored, folder.tensors.at(scales)->tensor(scales), block,
                                 file.path() + ": " + hf_name);
  };
  for (const auto& [name, shape] : parameters) {
    const std::vector<std::string> hf_names = adapter.to_hf_names(name, report.config);
    Tensor whole;
    if (hf_names.size() == 1) {
      whole = read(hf_names[0]);
    } else {  // stacked rows
      whole = Tensor::empty(shape, DType::F32);
      for (size_t row = 0; row < hf_names.size(); ++row) {
        Tensor slot = whole.narrow(int64_t(row), 1).reshape(row_shape(shape));
        copy_tensor(read(hf_names[row]), slot);
      }
    }
    writer.add(name, adapter.from_hf(name, whole, report.config));
    ++report.tensors;
    if (options.progress && report.tensors < int64_t(parameters.size())) {
      options.progress(report.tensors, int64_t(parameters.size()));
    }
  }
  writer.finish();
  if (options.progress) options.progress(report.tensors, report.tensors);
  return report;
}

}  // namespace titan::ckpt

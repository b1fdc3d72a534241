#include "titan/ckpt/hdf5/inspect.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <sstream>

#include "titan/ckpt/hdf5/open_checkpoint.h"
#include "titan/core/float_formats.h"

namespace titan::ckpt {
namespace {

// Elements per block when two tensors are compared: bounded memory for any model size.
constexpr int64_t kDiffBlockElements = int64_t(1) << 22;

// Runs f; an InputError from the h5 helpers (which name the attribute, not the file) gets
// the file's name in front, so the user's one line says where.
template <class F>
auto naming_file(const std::string& path, F f) {
  try {
    return f();
  } catch (const InputError& error) {
    throw InputError("checkpoint " + path + ": " + error.what());
  }
}

h5::H5Object open_root(hid_t file) { return h5::H5Object(H5_CHECK(H5Gopen2(file, "/", H5P_DEFAULT))); }

// The stored element type, floats through h5::stored_dtype; integers are other saved state.
DType dataset_dtype(hid_t dataset, const std::string& name) {
  h5::H5Object type(H5_CHECK(H5Dget_type(dataset)));
  if (H5Tget_class(type.id()) != H5T_INTEGER) return h5::stored_dtype(dataset, name);
  switch (H5Tget_size(type.id())) {
    case 1: return DType::U8;
    case 4: return DType::I32;
    case 8: return DType::I64;
    default: break;
  }
  TITAN_FAIL_INPUT() << name << ": a " << H5Tget_size(type.id()) * 8
                     << "-bit integer; checkpoints hold 8-, 32- or 64-bit integers";
  return DType::U8;
}

// The memory type that reads a stored dtype without conversion.
h5::H5Object memory_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return h5::float_type(h5::H5Float::F32);
    case DType::BF16: return h5::float_type(h5::H5Float::BF16);
    case DType::I64: return h5::H5Object(H5_CHECK(H5Tcopy(H5T_NATIVE_INT64)));
    case DType::I32: return h5::H5Object(H5_CHECK(H5Tcopy(H5T_NATIVE_INT32)));
    case DType::U8: return h5::H5Object(H5_CHECK(H5Tcopy(H5T_NATIVE_UINT8)));
    default: break;
  }
  TITAN_FAIL() << "no HDF5 memory type for " << dtype_name(dtype);
  return {};
}

const char* stored_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::I64: return "int64";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
    default: return "?";
  }
}

// An opened dataset with what reading it needs.
struct OpenDataset {
  h5::H5Object id;
  Shape shape;
  DType dtype;
};

OpenDataset open_dataset(hid_t file, const std::string& file_name, const std::string& dataset) {
  TITAN_CHECK_INPUT(H5Lexists(file, dataset.c_str(), H5P_DEFAULT) > 0)
      << "checkpoint " << file_name << ": no dataset '" << dataset << "'";
  OpenDataset d;
  d.id = h5::H5Object(H5_CHECK(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT)));
  d.shape = h5::dataset_shape(d.id.id());
  d.dtype = naming_file(file_name, [&] { return dataset_dtype(d.id.id(), dataset); });
  return d;
}

// Rows [start, start + count) of dim 0 in the stored dtype (the whole of a 0-d dataset).
Tensor read_rows(const OpenDataset& d, int64_t start, int64_t count) {
  h5::H5Object type = memory_type(d.dtype);
  if (d.shape.empty()) {
    Tensor t = Tensor::empty({}, d.dtype);
    H5_CHECK(H5Dread(d.id.id(), type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw_mutable_data()));
    return t;
  }
  Shape shape = d.shape;
  shape[0] = count;
  Tensor t = Tensor::empty(shape, d.dtype);
  if (t.numel() == 0) return t;
  std::vector<hsize_t> offset(d.shape.size(), 0), extent(shape.begin(), shape.end());
  offset[0] = hsize_t(start);
  h5::H5Object file_space(H5_CHECK(H5Dget_space(d.id.id())));
  H5_CHECK(H5Sselect_hyperslab(file_space.id(), H5S_SELECT_SET, offset.data(), nullptr,
                               extent.data(), nullptr));
  h5::H5Object memory_space(H5_CHECK(H5Screate_simple(int(extent.size()), extent.data(), nullptr)));
  H5_CHECK(H5Dread(d.id.id(), type.id(), memory_space.id(), file_space.id(), H5P_DEFAULT,
                   t.raw_mutable_data()));
  return t;
}

// Element i of a tensor of any stored dtype, as a double (exact for every dtype stored here
// up to 2^53).
double element(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F32: return t.data<float>()[i];
    case DType::BF16: return f32_from_bf16(t.data<bf16_t>()[i]);
    case DType::I64: return double(t.data<int64_t>()[i]);
    case DType::I32: return t.data<int32_t>()[i];
    case DType::U8: return t.data<uint8_t>()[i];
    default: break;
  }
  TITAN_FAIL() << "element: unexpected dtype " << dtype_name(t.dtype());
  return 0;
}

// Calls f(start, count) over dim 0 in blocks of about kDiffBlockElements elements.
void for_each_row_block(const Shape& shape, const std::function<void(int64_t, int64_t)>& f) {
  if (shape.empty()) return f(0, 1);
  const int64_t rows = shape[0];
  const int64_t row_elements = std::max<int64_t>(1, shape_numel(shape) / std::max<int64_t>(rows, 1));
  const int64_t block = std::max<int64_t>(1, kDiffBlockElements / row_elements);
  for (int64_t start = 0; start < rows; start += block) f(start, std::min(block, rows - start));
}

TensorDifference compare(const std::string& path, const OpenDataset& a, const OpenDataset& b) {
  TensorDifference d{path, a.shape, b.shape, a.dtype, b.dtype};
  if (a.shape != b.shape) {
    d.max_abs = d.max_rel = std::numeric_limits<double>::infinity();
    return d;
  }
  for_each_row_block(a.shape, [&](int64_t start, int64_t count) {
    const Tensor x = read_rows(a, start, count), y = read_rows(b, start, count);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double u = element(x, i), v = element(y, i);
      if (std::isnan(u) || std::isnan(v)) {
        if (std::isnan(u) != std::isnan(v)) d.max_abs = d.max_rel = std::numeric_limits<double>::infinity();
        continue;
      }
      if (u == v) continue;  // also equal infinities, whose difference is NaN
      const double abs = std::fabs(u - v);
      d.max_abs = std::max(d.max_abs, abs);
      d.max_rel = std::max(d.max_rel, abs / std::max(std::fabs(u), std::fabs(v)));
    }
  });
  return d;
}

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.6g", value);
  return text;
}

}  // namespace

const DatasetInfo* CheckpointInfo::find(const std::string& dataset_path) const {
  for (const DatasetInfo& d : datasets) {
    if (d.path == dataset_path) return &d;
  }
  return nullptr;
}

h5::H5Object open_checkpoint(const std::string& path) {
  h5::silence_error_stack();
  TITAN_CHECK_INPUT(std::filesystem::is_regular_file(path)) << "checkpoint " << path << ": no such file";
  TITAN_CHECK_INPUT(H5Fis_hdf5(path.c_str()) > 0) << "checkpoint " << path << ": not an HDF5 file";
  h5::H5Object file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  TITAN_CHECK_INPUT(file.valid()) << "checkpoint " << path << ": HDF5 cannot open it (truncated?)";
  h5::H5Object root = open_root(file.id());
  naming_file(path, [&] {
    TITAN_CHECK_INPUT(h5::has_attribute(root.id(), "format") &&
                      h5::read_string_attribute(root.id(), "format") == kFormatName)
        << "not a titan.cpp checkpoint (no attribute format = \"" << kFormatName << "\")";
    const int64_t version = h5::read_int_attribute(root.id(), "format_version");
    TITAN_CHECK_INPUT(version == kFormatVersion)
        << "format_version " << version << " is not one this build reads ("
        << kFormatVersion << ")";
    TITAN_CHECK_INPUT(h5::has_attribute(root.id(), "complete") &&
                      h5::read_int_attribute(root.id(), "complete") == 1)
        << "no attribute complete = 1: the save did not finish";
    return 0;
  });
  return file;
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  h5::H5Object file = open_checkpoint(path);
  h5::H5Object root = open_root(file.id());
  CheckpointInfo info;
  info.path = path;
  naming_file(path, [&] {
    const hid_t r = root.id();
    info.format_version = h5::read_int_attribute(r, "format_version");
    info.step = h5::read_int_attribute(r, "step");
    info.tokens_seen = h5::read_int_attribute(r, "tokens_seen");
    info.optimizer_steps = h5::read_int_attribute(r, "optimizer_steps");
    info.data_sequences = h5::read_int_attribute(r, "data_sequences");
    info.seed = h5::read_int_attribute(r, "seed");
    info.model_only = h5::read_int_attribute(r, "model_only");
    info.world_size = h5::read_int_attribute(r, "world_size");
    info.mesh = h5::read_string_attribute(r, "mesh");
    info.config_yaml = h5::read_string_attribute(r, "config_yaml");
    info.library_version = h5::read_string_attribute(r, "library_version");
    return 0;
  });
  for (const std::string& name : h5::list_datasets(root.id())) {
    const OpenDataset d = open_dataset(file.id(), path, name);
    info.datasets.push_back({name, d.shape, d.dtype});
  }
  return info;
}

Tensor read_whole_dataset(hid_t file, const std::string& file_name, const std::string& dataset) {
  const OpenDataset d = open_dataset(file, file_name, dataset);
  TITAN_CHECK_INPUT(d.dtype == DType::F32 || d.dtype == DType::BF16)
      << "checkpoint " << file_name << ": " << dataset << " is " << stored_dtype_name(d.dtype)
      << ", not a float tensor";
  const Tensor stored = read_rows(d, 0, d.shape.empty() ? 1 : d.shape[0]);
  if (d.dtype == DType::F32) return stored;
  Tensor wide = Tensor::empty(stored.shape(), DType::F32);
  const bf16_t* in = stored.data<bf16_t>();
  float* out = wide.mutable_data<float>();
  for (int64_t i = 0; i < wide.numel(); ++i) out[i] = f32_from_bf16(in[i]);
  return wide;
}

Tensor read_whole_dataset(const std::string& path, const std::string& dataset) {
  h5::H5Object file = open_checkpoint(path);
  return read_whole_dataset(file.id(), path, dataset);
}

CheckpointDiff diff_checkpoints(const std::string& path_a, const std::string& path_b) {
  const CheckpointInfo a = read_checkpoint_info(path_a), b = read_checkpoint_info(path_b);
  CheckpointDiff diff;
  diff.path_a = path_a;
  diff.path_b = path_b;
  auto attribute = [&diff](const char* name, const auto& x, const auto& y) {
    std::ostringstream line;
    line << name << ": " << x << " vs " << y;
    if (x != y) diff.attributes.push_back(line.str());
  };
  attribute("step", a.step, b.step);
  attribute("tokens_seen", a.tokens_seen, b.tokens_seen);
  attribute("optimizer_steps", a.optimizer_steps, b.optimizer_steps);
  attribute("data_sequences", a.data_sequences, b.data_sequences);
  attribute("seed", a.seed, b.seed);
  attribute("model_only", a.model_only, b.model_only);
  attribute("world_size", a.world_size, b.world_size);
  attribute("mesh", a.mesh, b.mesh);
  attribute("library_version", a.library_version, b.library_version);
  if (a.config_yaml != b.config_yaml) diff.attributes.push_back("config_yaml: differs");

  h5::H5Object file_a = open_checkpoint(path_a), file_b = open_checkpoint(path_b);
  for (const DatasetInfo& d : a.datasets) {
    if (b.find(d.path) == nullptr) {
      diff.only_in_a.push_back(d.path);
      continue;
    }
    const OpenDataset x = open_dataset(file_a.id(), path_a, d.path);
    const OpenDataset y = open_dataset(file_b.id(), path_b, d.path);
    diff.tensors.push_back(compare(d.path, x, y));
    diff.max_abs = std::max(diff.max_abs, diff.tensors.back().max_abs);
  }
  for (const DatasetInfo& d : b.datasets) {
    if (a.find(d.path) == nullptr) diff.only_in_b.push_back(d.path);
  }
  return diff;
}

std::string format_checkpoint_info(const CheckpointInfo& info, ConfigShown config) {
  std::ostringstream out;
  out << "checkpoint " << info.path << "\n"
      << "format_version: " << info.format_version << "\n"
      << "step: " << info.step << "\n"
      << "tokens_seen: " << info.tokens_seen << "\n"
      << "optimizer_steps: " << info.optimizer_steps << "\n"
      << "data_sequences: " << info.data_sequences << "\n"
      << "seed: " << info.seed << "\n"
      << "model_only: " << info.model_only << "\n"
      << "mesh: " << info.mesh << "\n"
      << "world_size: " << info.world_size << "\n"
      << "library_version: " << info.library_version << "\n";

  std::vector<std::string> lines;
  std::istringstream yaml(info.config_yaml);
  bool in_model = false;
  for (std::string line; std::getline(yaml, line);) {
    // Top-level keys start in column 0; the model section runs until the next one.
    if (!line.empty() && line[0] != ' ') in_model = line == "model:";
    if (config == ConfigShown::All || (config == ConfigShown::Model && in_model)) lines.push_back(line);
  }
  if (config != ConfigShown::None) {
    out << "config_yaml" << (config == ConfigShown::Model ? " (model section; --config all prints all)" : "")
        << ":\n";
    for (const std::string& line : lines) out << "  " << line << "\n";
  }

  int64_t elements = 0, bytes = 0;
  size_t path_width = 0, shape_width = 0;
  for (const DatasetInfo& d : info.datasets) {
    elements += shape_numel(d.shape);
    bytes += shape_numel(d.shape) * dtype_bytes(d.dtype);
    path_width = std::max(path_width, d.path.size());
    shape_width = std::max(shape_width, shape_string(d.shape).size());
  }
  out << "datasets: " << info.datasets.size() << ", " << elements << " elements, " << bytes
      << " bytes\n";
  for (const DatasetInfo& d : info.datasets) {
    const std::string shape = shape_string(d.shape);
    out << "  " << d.path << std::string(path_width - d.path.size() + 2, ' ') << shape
        << std::string(shape_width - shape.size() + 2, ' ') << stored_dtype_name(d.dtype) << "\n";
  }
  return out.str();
}

std::string format_checkpoint_diff(const CheckpointDiff& diff) {
  std::ostringstream out;
  out << "A: " << diff.path_a << "\nB: " << diff.path_b << "\n";
  for (const std::string& line : diff.attributes) out << line << "\n";
  size_t width = 6;
  for (const TensorDifference& t : diff.tensors) width = std::max(width, t.path.size());
  out << "tensor" << std::string(width - 6 + 2, ' ') << "max abs      max rel\n";
  for (const TensorDifference& t : diff.tensors) {
    out << t.path << std::string(width - t.path.size() + 2, ' ');
    if (t.shape_a != t.shape_b) {
      out << "shape " << shape_string(t.shape_a) << " vs " << shape_string(t.shape_b) << "\n";
      continue;
    }
    const std::string abs = number(t.max_abs);
    out << abs << std::string(abs.size() < 13 ? 13 - abs.size() : 1, ' ') << number(t.max_rel);
    if (t.dtype_a != t.dtype_b) {
      out << "  (" << stored_dtype_name(t.dtype_a) << " vs " << stored_dtype_name(t.dtype_b) << ")";
    }
    out << "\n";
  }
  for (const std::string& path : diff.only_in_a) out << "only in A: " << path << "\n";
  for (const std::string& path : diff.only_in_b) out << "only in B: " << path << "\n";
  out << "max abs diff: " << number(diff.max_abs) << "\n";
  return out.str();
}

}  // namespace titan::ckpt

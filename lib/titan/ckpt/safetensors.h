// safetensors files: Hugging Face's flat tensor format, read and written.
//
// Layout (safetensors/src/tensor.rs):
//   [0, 8)        N, a little-endian u64: the header's length in bytes
//   [8, 8+N)      UTF-8 JSON object, padded with spaces so the data starts 8-byte aligned:
//                   {"__metadata__": {"format": "pt", ...},            string -> string
//                    "tok_embeddings.weight": {"dtype": "F32", "shape": [2048, 64],
//                                              "data_offsets": [0, 524288]}, ...}
//   [8+N, end)    the tensors' bytes, row-major, little-endian, packed without gaps;
//                 data_offsets [begin, end) count from 8+N.
//
//   write_safetensors("model.safetensors", {{"w", w}, {"b", b}}, {{"step", "10"}});
//   SafetensorsFile file = read_safetensors("model.safetensors");
//   for (const std::string& name : file.names()) log::info("%s", name.c_str());
//   Tensor w = file.tensor("w");                       // a new CPU tensor
//   Tensor rows = file.tensor_rows("w", 16, 8);        // rows [16, 24) of dim 0 only
//
// Dtypes: F32 BF16 F16 F8_E4M3 F8_E5M2 I32 I64 U8 (titan's DTypes). A 0-d tensor has
// shape [] and one element; a dimension may be 0.
//
// Reading validates what the reference reader validates: the header length (at most
// 100,000,000 bytes and inside the file), the JSON (an object, no duplicate names, each
// entry a dtype, a shape of sizes >= 0 and two data_offsets whose span is the tensor's
// bytes, __metadata__ string -> string), that the tensors tile the data from 0 with no gap
// or overlap, and that the data ends where the file ends. Any failure, a missing file or a
// name that is not in the file throws InputError with one line: "safetensors <path>:
// <problem>" (exit code 2).
//
// Writing goes to <path>.tmp, which is fsync'ed and then renamed to <path>, so a crash
// never leaves a partial file under the final name. The metadata always carries
// "format": "pt" unless the caller sets another format (transformers requires the field).
// I/O failures while writing throw Error (exit code 1).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "titan/core/tensor.h"

namespace titan::ckpt {

// "F32", "BF16", ... and back. The reverse throws InputError for a name titan lacks.
const char* safetensors_dtype_name(DType dtype);
DType safetensors_dtype_from_name(const std::string& name);

// One tensor of a file's header.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  int64_t begin = 0;  // data_offsets, relative to the start of the data
  int64_t end = 0;
};

// An opened, validated file. Holds the header only; tensor() reads the bytes from disk
// each time it is called, so a large file can be read one tensor (or row block) at a time.
class SafetensorsFile {
 public:
  const std::string& path() const { return path_; }
  // Names in data order (ascending data_offsets), which for files written here is the
  // order given to write_safetensors (zero-byte tensors share an offset with a neighbour,
  // so their place among those may differ).
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const;  // InputError if absent
  DType dtype(const std::string& name) const { return entry(name).dtype; }
  const Shape& shape(const std::string& name) const { return entry(name).shape; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  int64_t data_offset() const { return data_offset_; }  // 8 + N: file offset of the data

  // The whole tensor, a new CPU tensor. InputError if absent or if the file changed so
  // that the bytes cannot be read.
  Tensor tensor(const std::string& name) const;
  // Rows [start, start + length) of dim 0 (a tensor of dim >= 1), a new CPU tensor: the
  // piece of a global tensor that one rank loads.
  Tensor tensor_rows(const std::string& name, int64_t start, int64_t length) const;

 private:
  friend SafetensorsFile read_safetensors(const std::string& path);
  std::string path_;
  int64_t data_offset_ = 0;
  std::vector<SafetensorsEntry> entries_;       // ascending begin
  std::map<std::string, size_t> index_;         // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

// Opens and validates path's header (the tensor bytes are read on demand).
SafetensorsFile read_safetensors(const std::string& path);

// Writes the tensors, packed in the given order, and the metadata. Tensors on a device are
// copied to the host first. Names must be unique and not "__metadata__"; every tensor must
// be defined and of a dtype listed above (checked before anything is written: Error).
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace titan::ckpt

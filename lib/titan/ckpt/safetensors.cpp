#include "titan/ckpt/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "titan/ckpt/checkpoint_folder.h"
#include "titan/core/copy.h"

namespace titan::ckpt {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; a big-endian host would need swapping");

namespace {

// The reference reader's limit on the header: a larger N is a foreign or corrupt file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kDTypeNames[] = {
    {DType::F32, "F32"},       {DType::BF16, "BF16"},       {DType::F16, "F16"},
    {DType::F8E4M3, "F8_E4M3"}, {DType::F8E5M2, "F8_E5M2"}, {DType::I32, "I32"},
    {DType::I64, "I64"},       {DType::U8, "U8"},
};

std::string known_dtype_list() {
  std::string s;
  for (const DTypeName& d : kDTypeNames) s += std::string(s.empty() ? "" : " ") + d.name;
  return s;
}

// Throws InputError "safetensors <path>: <message>".
#define SAFETENSORS_CHECK(cond, path) TITAN_CHECK_INPUT(cond) << "safetensors " << (path) << ": "

// An open file descriptor, closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// Reads exactly `bytes` at `offset`; false on a short read (the file shrank) or an error.
bool read_exact(int fd, void* dst, int64_t bytes, int64_t offset) {
  auto* p = static_cast<char*>(dst);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, size_t(bytes), off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= n;
    offset += n;
  }
  return true;
}

void write_all(int fd, const void* src, int64_t bytes, const std::string& path) {
  const auto* p = static_cast<const char*>(src);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, size_t(std::min<int64_t>(bytes, int64_t(1) << 30)));
    if (n < 0 && errno == EINTR) continue;
    TITAN_CHECK(n > 0) << "safetensors " << path << ": write failed: " << std::strerror(errno);
    p += n;
    bytes -= n;
  }
}

int64_t checked_numel(const Shape& shape, bool* overflow) {
  int64_t n = 1;
  *overflow = false;
  for (int64_t s : shape) *overflow |= __builtin_mul_overflow(n, s, &n);
  return n;
}

// One header entry from its JSON value; `path` and `name` only name the problem.
SafetensorsEntry parse_entry(const std::string& path, const std::string& name,
                             const nlohmann::json& value) {
  SAFETENSORS_CHECK(value.is_object(), path) << "entry '" << name << "' is not a JSON object";
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    SAFETENSORS_CHECK(value.contains(key), path) << "entry '" << name << "' has no \"" << key << "\"";
  }
  for (const auto& [key, unused] : value.items()) {
    SAFETENSORS_CHECK(key == "dtype" || key == "shape" || key == "data_offsets", path)
        << "entry '" << name << "' has an unknown key \"" << key << "\"";
  }
  SafetensorsEntry e;
  e.name = name;
  const nlohmann::json& dtype = value["dtype"];
  SAFETENSORS_CHECK(dtype.is_string(), path) << "entry '" << name << "': dtype is not a string";
  const std::string dtype_name = dtype.get<std::string>();
  bool known = false;
  for (const DTypeName& d : kDTypeNames) {
    if (dtype_name == d.name) {
      e.dtype = d.dtype;
      known = true;
    }
  }
  SAFETENSORS_CHECK(known, path) << "entry '" << name << "' has dtype '" << dtype_name
                                 << "', which titan does not read (known: " << known_dtype_list()
                                 << ")";
  const nlohmann::json& shape = value["shape"];
  SAFETENSORS_CHECK(shape.is_array(), path) << "entry '" << name << "': shape is not an array";
  for (const nlohmann::json& s : shape) {
    SAFETENSORS_CHECK(s.is_number_unsigned() && s.get<uint64_t>() <= uint64_t(INT64_MAX), path)
        << "entry '" << name << "': shape " << shape.dump() << " holds a value that is not a size";
    e.shape.push_back(s.get<int64_t>());
  }
  const nlohmann::json& offsets = value["data_offsets"];
  SAFETENSORS_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                        offsets[1].is_number_unsigned() &&
                        offsets[1].get<uint64_t>() <= uint64_t(INT64_MAX),
                    path)
      << "entry '" << name << "': data_offsets " << offsets.dump()
      << " is not two non-negative integers";
  e.begin = offsets[0].get<int64_t>();
  e.end = offsets[1].get<int64_t>();
  SAFETENSORS_CHECK(e.begin <= e.end, path)
      << "entry '" << name << "': data_offsets " << offsets.dump() << " end before they begin";
  bool overflow = false;
  int64_t bytes = checked_numel(e.shape, &overflow);
  overflow |= __builtin_mul_overflow(bytes, dtype_bytes(e.dtype), &bytes);
  SAFETENSORS_CHECK(!overflow && e.end - e.begin == bytes, path)
      << "entry '" << name << "': data_offsets " << offsets.dump() << " span " << e.end - e.begin
      << " bytes, but " << dtype_name << " " << shape_string(e.shape) << " needs "
      << (overflow ? std::string("more than 2^63") : std::to_string(bytes));
  return e;
}

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  for (const DTypeName& d : kDTypeNames) {
    if (d.dtype == dtype) return d.name;
  }
  TITAN_FAIL() << "dtype " << dtype_name(dtype) << " has no safetensors name";
}

DType safetensors_dtype_from_name(const std::string& name) {
  for (const DTypeName& d : kDTypeNames) {
    if (name == d.name) return d.dtype;
  }
  TITAN_FAIL_INPUT() << "safetensors dtype '" << name << "' is not one titan reads (known: "
                     << known_dtype_list() << ")";
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const SafetensorsEntry& e : entries_) out.push_back(e.name);
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) > 0; }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = index_.find(name);
  SAFETENSORS_CHECK(it != index_.end(), path_)
      << "no tensor named '" << name << "' (the file holds " << entries_.size() << " tensors)";
  return entries_[it->second];
}

namespace {

// Fills t with t.bytes() bytes read at file offset `offset`.
void read_tensor_bytes(const std::string& path, const std::string& name, int64_t offset, Tensor& t) {
  if (t.bytes() == 0) return;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  SAFETENSORS_CHECK(fd.get() >= 0, path) << "cannot open: " << std::strerror(errno);
  SAFETENSORS_CHECK(read_exact(fd.get(), t.raw_mutable_data(), t.bytes(), offset), path)
      << "cannot read tensor '" << name << "' (was the file truncated after it was opened?)";
}

}  // namespace

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  Tensor t = Tensor::empty(e.shape, e.dtype);
  read_tensor_bytes(path_, name, data_offset_ + e.begin, t);
  return t;
}

Tensor SafetensorsFile::tensor_rows(const std::string& name, int64_t start, int64_t length) const {
  const SafetensorsEntry& e = entry(name);
  TITAN_CHECK(!e.shape.empty()) << "safetensors " << path_ << ": tensor '" << name
                                << "' is 0-d and has no rows";
  TITAN_CHECK(start >= 0 && length >= 0 && start + length <= e.shape[0])
      << "safetensors " << path_ << ": rows [" << start << ", " << start + length
      << ") outside tensor '" << name << "' " << shape_string(e.shape);
  Shape shape = e.shape;
  shape[0] = length;
  Tensor t = Tensor::empty(shape, e.dtype);
  const int64_t row_bytes = length > 0 ? t.bytes() / length : 0;
  read_tensor_bytes(path_, name, data_offset_ + e.begin + start * row_bytes, t);
  return t;
}

SafetensorsFile read_safetensors(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  SAFETENSORS_CHECK(fd.get() >= 0, path) << "cannot open: " << std::strerror(errno);
  struct stat st {};
  SAFETENSORS_CHECK(::fstat(fd.get(), &st) == 0, path) << "cannot stat: " << std::strerror(errno);
  SAFETENSORS_CHECK(S_ISREG(st.st_mode), path) << "not a regular file";
  const int64_t file_bytes = st.st_size;
  SAFETENSORS_CHECK(file_bytes >= 8, path)
      << "file is " << file_bytes << " bytes, shorter than the 8-byte header length";

  unsigned char length_bytes[8];
  SAFETENSORS_CHECK(read_exact(fd.get(), length_bytes, 8, 0), path) << "cannot read the header length";
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | length_bytes[i];
  SAFETENSORS_CHECK(header_bytes <= kMaxHeaderBytes, path)
      << "header length " << header_bytes << " exceeds the format's limit of " << kMaxHeaderBytes
      << " bytes (not a safetensors file?)";
  SAFETENSORS_CHECK(int64_t(header_bytes) <= file_bytes - 8, path)
      << "header length " << header_bytes << " runs past the end of the file (" << file_bytes
      << " bytes; truncated?)";

  std::string header(header_bytes, '\0');
  SAFETENSORS_CHECK(read_exact(fd.get(), header.data(), int64_t(header_bytes), 8), path)
      << "cannot read the " << header_bytes << "-byte header";
  SAFETENSORS_CHECK(!header.empty() && header[0] == '{', path)
      << "header does not start with '{' (not a safetensors file?)";

  // Duplicate top-level keys would be silently merged by the parser: count them on the way.
  std::set<std::string> seen;
  std::string duplicate;
  const nlohmann::json::parser_callback_t on_event =
      [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
          if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty()) {
            duplicate = parsed.get<std::string>();
          }
        }
        return true;
      };
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(header, on_event);
  } catch (const nlohmann::json::exception& e) {
    TITAN_FAIL_INPUT() << "safetensors " << path << ": header is not valid JSON: " << e.what();
  }
  SAFETENSORS_CHECK(root.is_object(), path) << "header is not a JSON object";
  SAFETENSORS_CHECK(duplicate.empty(), path) << "header names '" << duplicate << "' twice";

  SafetensorsFile file;
  file.path_ = path;
  file.data_offset_ = 8 + int64_t(header_bytes);
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      SAFETENSORS_CHECK(value.is_object(), path) << "__metadata__ is not a JSON object";
      for (const auto& [key, text] : value.items()) {
        SAFETENSORS_CHECK(text.is_string(), path)
            << "__metadata__ value of '" << key << "' is not a string: " << text.dump();
        file.metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    file.entries_.push_back(parse_entry(path, name, value));
  }

  // The tensors must tile [0, data bytes) exactly, as the reference reader requires.
  std::stable_sort(file.entries_.begin(), file.entries_.end(),
                   [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  const int64_t data_bytes = file_bytes - file.data_offset_;
  int64_t expected = 0;
  for (size_t i = 0; i < file.entries_.size(); ++i) {
    const SafetensorsEntry& e = file.entries_[i];
    SAFETENSORS_CHECK(e.begin == expected, path)
        << "tensor '" << e.name << "' starts at data offset " << e.begin << ", expected "
        << expected << (e.begin < expected ? " (overlaps the previous tensor)" : " (a gap)");
    SAFETENSORS_CHECK(e.end <= data_bytes, path)
        << "tensor '" << e.name << "' data_offsets [" << e.begin << ", " << e.end
        << "] run past the end of the data (" << data_bytes << " bytes; truncated?)";
    expected = e.end;
    file.index_[e.name] = i;
  }
  SAFETENSORS_CHECK(expected == data_bytes, path)
      << "the tensors end at data offset " << expected << " but the file holds " << data_bytes
      << " data bytes (" << data_bytes - expected << " trailing)";
  return file;
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Header first, with every check done before the file is created.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  if (metadata.count("format") == 0) meta["format"] = "pt";
  for (const auto& [key, value] : metadata) meta[key] = value;
  header["__metadata__"] = meta;
  std::set<std::string> names;
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TITAN_CHECK(name != "__metadata__") << "safetensors " << path << ": '__metadata__' is reserved";
    TITAN_CHECK(names.insert(name).second) << "safetensors " << path << ": name '" << name
                                           << "' given twice";
    TITAN_CHECK(t.defined()) << "safetensors " << path << ": tensor '" << name << "' is undefined";
    nlohmann::ordered_json entry;
    entry["dtype"] = safetensors_dtype_name(t.dtype());
    entry["shape"] = t.shape();
    entry["data_offsets"] = {offset, offset + t.bytes()};
    header[name] = std::move(entry);
    offset += t.bytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  unsigned char length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));

  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  TITAN_CHECK(fd.get() >= 0) << "safetensors " << tmp << ": cannot create: " << std::strerror(errno);
  try {
    write_all(fd.get(), length_bytes, 8, tmp);
    write_all(fd.get(), text.data(), int64_t(text.size()), tmp);
    for (const auto& [name, t] : tensors) {
      const Tensor host = t.device().is_cpu() ? t : to_device(t, Device::cpu());
      if (host.bytes() > 0) write_all(fd.get(), host.raw_data(), host.bytes(), tmp);
    }
    TITAN_CHECK(::fsync(fd.get()) == 0) << "safetensors " << tmp << ": fsync failed: "
                                        << std::strerror(errno);
    TITAN_CHECK(::close(fd.release()) == 0) << "safetensors " << tmp << ": close failed: "
                                            << std::strerror(errno);
    publish_file(tmp, path, "safetensors");
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace titan::ckpt

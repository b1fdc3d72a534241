// Token shards: the writer (tokenize_to_shards), the header codec and the memory-mapped
// reader. shards.h has the file format.
#include "titan/data/shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "titan/core/error.h"
#include "titan/core/philox.h"

namespace titan::data {

static_assert(std::endian::native == std::endian::little,
              "shard files are little-endian and read in place");

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr const char* kManifestName = "manifest.json";
constexpr const char* kManifestFormat = "titan.cpp token shards";
constexpr int64_t kChecksummedBytes = 56;
constexpr uint64_t kValidationStream = philox_stream_key("data.shards.validation");

// FNV-1a 64 over the header's first 56 bytes.
uint64_t header_checksum(const uint8_t* bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (int64_t i = 0; i < kChecksummedBytes; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

template <class T>
void put(uint8_t* at, T value) {
  std::memcpy(at, &value, sizeof value);
}
template <class T>
T get(const uint8_t* at) {
  T value;
  std::memcpy(&value, at, sizeof value);
  return value;
}

std::string shard_file_name(ShardSplit split, int64_t index) {
  char name[64];
  std::snprintf(name, sizeof name, "%s-%05lld.bin", std::string(shard_split_name(split)).c_str(),
                (long long)index);
  return name;
}

// The fix every "this file is not a good shard" message ends with.
constexpr const char* kRetokenizeFix =
    "re-create the shards with `titan-data tokenize` (or tools/fetch_assets.sh for the "
    "project's datasets)";

// ---------------------------------------------------------------------------------------
// Writing

// Appends a split's token stream to numbered shard files of at most max_tokens tokens.
class SplitWriter {
 public:
  SplitWriter(std::string folder, ShardSplit split, int64_t max_tokens)
      : folder_(std::move(folder)), split_(split), max_tokens_(max_tokens) {}
  SplitWriter(const SplitWriter&) = delete;
  SplitWriter& operator=(const SplitWriter&) = delete;
  ~SplitWriter() {
    if (file_ != nullptr) std::fclose(file_);
  }

  void append(std::span<const uint32_t> tokens) {
    while (!tokens.empty()) {
      if (file_ == nullptr) open_next();
      const size_t room = size_t(max_tokens_ - count_);
      const size_t take = std::min(room, tokens.size());
      for (size_t i = 0; i < take; ++i) max_id_ = std::max(max_id_, tokens[i]);
      TITAN_CHECK(std::fwrite(tokens.data(), sizeof(uint32_t), take, file_) == take)
          << "writing " << path_ << ": " << std::strerror(errno);
      count_ += int64_t(take);
      tokens = tokens.subspan(take);
      if (count_ == max_tokens_) close_current();
    }
  }

  void finish() {
    if (file_ != nullptr) close_current();
  }

  struct Written {
    std::string name;
    int64_t tokens;
    uint32_t max_token_id;
  };
  const std::vector<Written>& written() const { return written_; }

 private:
  void open_next() {
    const std::string name = shard_file_name(split_, int64_t(written_.size()));
    path_ = (fs::path(folder_) / name).string();
    file_ = std::fopen(path_.c_str(), "wb");
    TITAN_CHECK(file_ != nullptr) << "cannot create " << path_ << ": " << std::strerror(errno);
    const std::array<uint8_t, kShardHeaderBytes> placeholder{};
    TITAN_CHECK(std::fwrite(placeholder.data(), 1, placeholder.size(), file_) == placeholder.size())
        << "writing " << path_ << ": " << std::strerror(errno);
    count_ = 0;
    max_id_ = 0;
    current_name_ = name;
  }

  // The header goes in last, when the count and the largest id are known.
  void close_current() {
    ShardHeader header;
    header.version = kShardFormatVersion;
    header.dtype = kShardDtypeUint32;
    header.tokens = count_;
    header.max_token_id = max_id_;
    header.file_bytes = kShardHeaderBytes + 4 * count_;
    const std::array<uint8_t, kShardHeaderBytes> bytes = shard_header_encode(header);
    const bool ok = std::fseek(file_, 0, SEEK_SET) == 0 &&
                    std::fwrite(bytes.data(), 1, bytes.size(), file_) == bytes.size();
    const int closed = std::fclose(file_);
    file_ = nullptr;
    TITAN_CHECK(ok && closed == 0) << "writing " << path_ << ": " << std::strerror(errno);
    written_.push_back({current_name_, count_, max_id_});
  }

  std::string folder_;
  ShardSplit split_;
  int64_t max_tokens_;
  std::FILE* file_ = nullptr;
  std::string path_, current_name_;
  int64_t count_ = 0;
  uint32_t max_id_ = 0;
  std::vector<Written> written_;
};

bool is_jsonl(const std::string& path) { return fs::path(path).extension() == ".jsonl"; }

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// Calls visit(text, where) for each document of a file, `where` naming it in errors.
template <class Visit>
void for_each_document(const std::string& path, Visit&& visit) {
  std::ifstream in(path, std::ios::binary);
  TITAN_CHECK_INPUT(in) << "tokenize: cannot read input file " << path << ": "
                        << std::strerror(errno);
  if (!is_jsonl(path)) {
    std::ostringstream text;
    text << in.rdbuf();
    visit(std::string_view(text.str()), path);
    return;
  }
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (is_blank(line)) continue;
    const std::string where = path + ":" + std::to_string(line_number);
    Json object = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    TITAN_CHECK_INPUT(!object.is_discarded())
        << "tokenize: " << where << " is not valid JSON: JSONL files hold one JSON object per "
        << "line with the document in a string field `text`";
    const auto text = object.is_object() ? object.find("text") : object.end();
    TITAN_CHECK_INPUT(object.is_object() && text != object.end() && text->is_string())
        << "tokenize: " << where << " has no string field `text`: JSONL files hold one JSON "
        << "object per line with the document in `text`";
    visit(std::string_view(text->get_ref<const std::string&>()), where);
  }
}

// Documents in a file, counted the way for_each_document visits them (without parsing).
int64_t count_documents(const std::string& path) {
  if (!is_jsonl(path)) return 1;
  std::ifstream in(path, std::ios::binary);
  TITAN_CHECK_INPUT(in) << "tokenize: cannot read input file " << path << ": "
                        << std::strerror(errno);
  int64_t documents = 0;
  std::string line;
  while (std::getline(in, line)) documents += is_blank(line) ? 0 : 1;
  return documents;
}

// A uniform double in [0, 1) for document d: the validation draw.
double document_uniform(uint64_t seed, int64_t document) {
  const PhiloxCounter block = philox_block(seed, kValidationStream, document);
  const uint64_t bits = (uint64_t(block[1]) << 32) | block[0];
  return double(bits >> 11) * 0x1.0p-53;
}

// Removes what an earlier run left in the folder, so no stale shard outlives a new manifest.
void clear_old_shards(const fs::path& folder) {
  fs::remove(folder / kManifestName);
  for (const fs::directory_entry& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    const bool shard = entry.path().extension() == ".bin" &&
                       (name.starts_with("train-") || name.starts_with("validation-"));
    if (shard) fs::remove(entry.path());
  }
}

}  // namespace

std::string_view shard_split_name(ShardSplit split) {
  return split == ShardSplit::Train ? "train" : "validation";
}

std::array<uint8_t, kShardHeaderBytes> shard_header_encode(const ShardHeader& header) {
  std::array<uint8_t, kShardHeaderBytes> bytes{};
  std::memcpy(bytes.data(), kShardMagic, sizeof kShardMagic);
  put<uint32_t>(bytes.data() + 8, header.version);
  put<uint32_t>(bytes.data() + 12, header.dtype);
  put<uint64_t>(bytes.data() + 16, uint64_t(header.tokens));
  put<uint32_t>(bytes.data() + 24, header.max_token_id);
  put<uint64_t>(bytes.data() + 32, uint64_t(header.file_bytes));
  put<uint64_t>(bytes.data() + 56, header_checksum(bytes.data()));
  return bytes;
}

void shard_write(const std::string& path, std::span<const uint32_t> tokens) {
  ShardHeader header;
  header.version = kShardFormatVersion;
  header.dtype = kShardDtypeUint32;
  header.tokens = int64_t(tokens.size());
  for (uint32_t id : tokens) header.max_token_id = std::max(header.max_token_id, id);
  header.file_bytes = kShardHeaderBytes + 4 * header.tokens;
  const std::array<uint8_t, kShardHeaderBytes> bytes = shard_header_encode(header);
  std::FILE* file = std::fopen(path.c_str(), "wb");
  TITAN_CHECK(file != nullptr) << "cannot create " << path << ": " << std::strerror(errno);
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size() &&
                  std::fwrite(tokens.data(), 4, tokens.size(), file) == tokens.size();
  const int closed = std::fclose(file);
  TITAN_CHECK(ok && closed == 0) << "writing " << path << ": " << std::strerror(errno);
}

TokenizeReport tokenize_to_shards(const TokenizeInput& input) {
  TITAN_CHECK_INPUT(bool(input.encode)) << "tokenize: no encoder given";
  TITAN_CHECK_INPUT(input.vocab_size >= 1 && input.vocab_size <= (int64_t(1) << 32))
      << "tokenize: vocab size " << input.vocab_size << " does not fit uint32 token ids";
  TITAN_CHECK_INPUT(input.bos_id >= 0 && input.bos_id < input.vocab_size && input.eos_id >= 0 &&
                    input.eos_id < input.vocab_size)
      << "tokenize: BOS " << input.bos_id << " / EOS " << input.eos_id
      << " outside the vocabulary [0, " << input.vocab_size << ")";
  TITAN_CHECK_INPUT(!input.files.empty()) << "tokenize: no input files";
  TITAN_CHECK_INPUT(!input.out_dir.empty()) << "tokenize: no output folder (--out)";
  TITAN_CHECK_INPUT(input.validation_fraction >= 0.0 && input.validation_fraction < 1.0)
      << "tokenize: validation fraction " << input.validation_fraction << " is not in [0, 1)";
  TITAN_CHECK_INPUT(input.max_shard_tokens >= 1)
      << "tokenize: shard size " << input.max_shard_tokens << " tokens";

  // Count documents (and bytes, for progress) first: the validation split holds an
  // exact number of documents, chosen in one streaming pass.
  TokenizeReport report;
  int64_t total_documents = 0;
  for (const std::string& path : input.files) {
    std::error_code error;
    const uintmax_t bytes = fs::file_size(path, error);
    TITAN_CHECK_INPUT(!error && fs::is_regular_file(path))
        << "tokenize: input file " << path << " does not exist or is not a regular file";
    report.input_bytes += int64_t(bytes);
    total_documents += count_documents(path);
  }
  int64_t validation_target = 0;
  if (input.validation_fraction > 0.0 && total_documents >= 2) {
    validation_target = std::llround(input.validation_fraction * double(total_documents));
    validation_target = std::clamp<int64_t>(validation_target, 1, total_documents - 1);
  }

  const fs::path folder(input.out_dir);
  std::error_code error;
  fs::create_directories(folder, error);
  TITAN_CHECK_INPUT(!error && fs::is_directory(folder))
      << "tokenize: cannot create the output folder " << input.out_dir << ": " << error.message();
  clear_old_shards(folder);

  SplitWriter train(input.out_dir, ShardSplit::Train, input.max_shard_tokens);
  SplitWriter validation(input.out_dir, ShardSplit::Validation, input.max_shard_tokens);
  std::vector<uint32_t> tokens;
  int64_t bytes_done = 0;
  for (const std::string& path : input.files) {
    for_each_document(path, [&](std::string_view text, const std::string& where) {
      const std::vector<int32_t> ids = input.encode(text);
      tokens.clear();
      tokens.reserve(ids.size() + 2);
      tokens.push_back(uint32_t(input.bos_id));
      for (size_t i = 0; i < ids.size(); ++i) {
        TITAN_CHECK_INPUT(ids[i] >= 0 && ids[i] < input.vocab_size)
            << "tokenize: " << where << ": the encoder returned id " << ids[i] << " (token "
            << i << "), outside the vocabulary [0, " << input.vocab_size << ")";
        tokens.push_back(uint32_t(ids[i]));
      }
      tokens.push_back(uint32_t(input.eos_id));

      // Selection sampling (Knuth's Algorithm S): take document d with probability
      // (still needed) / (still to come), which yields exactly validation_target documents.
      const int64_t d = report.documents;
      const int64_t needed = validation_target - report.validation_documents;
      const bool held_out = needed > 0 && document_uniform(input.seed, d) * double(total_documents - d) <
                                              double(needed);
      if (held_out) {
        validation.append(tokens);
        ++report.validation_documents;
        report.validation_tokens += int64_t(tokens.size());
      } else {
        train.append(tokens);
        ++report.train_documents;
        report.train_tokens += int64_t(tokens.size());
      }
      ++report.documents;
      bytes_done += int64_t(text.size());
      // done == total is the last call, made below once the shards are complete.
      if (input.progress && bytes_done < report.input_bytes) input.progress(bytes_done, report.input_bytes);
    });
  }
  train.finish();
  validation.finish();
  TITAN_CHECK_INPUT(report.documents == total_documents)
      << "tokenize: an input file changed while it was read (" << total_documents
      << " documents counted, " << report.documents << " read)";

  Json shards = Json::array();
  for (const auto& [split, writer] :
       {std::pair{ShardSplit::Train, &train}, std::pair{ShardSplit::Validation, &validation}}) {
    for (const SplitWriter::Written& file : writer->written()) {
      shards.push_back({{"file", file.name},
                        {"split", shard_split_name(split)},
                        {"tokens", file.tokens},
                        {"max_token_id", file.max_token_id}});
      report.shard_paths.push_back((folder / file.name).string());
    }
  }
  report.shards = int64_t(shards.size());
  const Json manifest = {
      {"format", kManifestFormat},
      {"format_version", kShardFormatVersion},
      {"token_dtype", "uint32"},
      {"tokenizer", input.tokenizer_description},
      {"vocab_size", input.vocab_size},
      {"bos_id", input.bos_id},
      {"eos_id", input.eos_id},
      {"documents", report.documents},
      {"input_files", int64_t(input.files.size())},
      {"input_bytes", report.input_bytes},
      {"validation_fraction", input.validation_fraction},
      {"seed", input.seed},
      {"splits",
       {{"train", {{"documents", report.train_documents}, {"tokens", report.train_tokens},
                   {"shards", int64_t(train.written().size())}}},
        {"validation", {{"documents", report.validation_documents},
                        {"tokens", report.validation_tokens},
                        {"shards", int64_t(validation.written().size())}}}}},
      {"shards", shards},
  };
  // The manifest is written last and renamed into place: a folder whose tokenize run
  // stopped half-way has no manifest, and readers say so.
  report.manifest_path = (folder / kManifestName).string();
  const std::string temporary = report.manifest_path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << manifest.dump(2) << "\n";
    TITAN_CHECK(out.good()) << "writing " << temporary << ": " << std::strerror(errno);
  }
  fs::rename(temporary, report.manifest_path);
  if (input.progress) input.progress(report.input_bytes, report.input_bytes);
  return report;
}

// ---------------------------------------------------------------------------------------
// Reading

Shard Shard::open(const std::string& path, int64_t vocab_size) {
  Shard shard;
  shard.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TITAN_CHECK_INPUT(fd >= 0) << "token shard " << path << ": cannot open: " << std::strerror(errno)
                             << "; " << kRetokenizeFix;
  struct stat info {};
  const bool stat_ok = ::fstat(fd, &info) == 0;
  const int64_t actual_bytes = stat_ok ? int64_t(info.st_size) : -1;
  if (!stat_ok || actual_bytes < kShardHeaderBytes) {
    ::close(fd);
    TITAN_FAIL_INPUT() << "token shard " << path << ": truncated (" << actual_bytes
                       << " bytes, shorter than the " << kShardHeaderBytes
                       << "-byte header); " << kRetokenizeFix;
  }
  void* map = ::mmap(nullptr, size_t(actual_bytes), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file
  TITAN_CHECK(map != MAP_FAILED) << "token shard " << path << ": mmap failed: "
                                 << std::strerror(errno);
  shard.map_ = map;
  shard.map_bytes_ = size_t(actual_bytes);
  const auto* bytes = static_cast<const uint8_t*>(map);

  // Checks from the outside in: is it ours, which version, is the header intact, is the
  // file whole, do its ids fit the model.
  TITAN_CHECK_INPUT(std::memcmp(bytes, kShardMagic, sizeof kShardMagic) == 0)
      << "token shard " << path << ": not a titan.cpp token shard (foreign file: its first "
      << "bytes are not \"TTNSHARD\"); " << kRetokenizeFix;
  ShardHeader& header = shard.header_;
  header.version = get<uint32_t>(bytes + 8);
  TITAN_CHECK_INPUT(header.version == kShardFormatVersion)
      << "token shard " << path << ": format version " << header.version << ", this build reads "
      << "version " << kShardFormatVersion << "; " << kRetokenizeFix;
  TITAN_CHECK_INPUT(get<uint64_t>(bytes + 56) == header_checksum(bytes))
      << "token shard " << path << ": corrupt header (checksum mismatch); " << kRetokenizeFix;
  header.dtype = get<uint32_t>(bytes + 12);
  header.tokens = int64_t(get<uint64_t>(bytes + 16));
  header.max_token_id = get<uint32_t>(bytes + 24);
  header.file_bytes = int64_t(get<uint64_t>(bytes + 32));
  TITAN_CHECK_INPUT(header.dtype == kShardDtypeUint32)
      << "token shard " << path << ": token dtype " << header.dtype << " (this build reads "
      << kShardDtypeUint32 << " = uint32); " << kRetokenizeFix;
  TITAN_CHECK_INPUT(header.tokens >= 0 && header.tokens <= (int64_t(1) << 60) &&
                    header.file_bytes == kShardHeaderBytes + 4 * header.tokens)
      << "token shard " << path << ": corrupt header (" << header.tokens << " tokens but "
      << header.file_bytes << " bytes); " << kRetokenizeFix;
  TITAN_CHECK_INPUT(actual_bytes >= header.file_bytes)
      << "token shard " << path << ": truncated: " << actual_bytes << " bytes of "
      << header.file_bytes << " (" << (actual_bytes - kShardHeaderBytes) / 4 << " of "
      << header.tokens << " tokens); " << kRetokenizeFix;
  TITAN_CHECK_INPUT(actual_bytes == header.file_bytes)
      << "token shard " << path << ": " << actual_bytes - header.file_bytes
      << " bytes past the end its header gives (" << header.file_bytes << " bytes); "
      << kRetokenizeFix;
  TITAN_CHECK_INPUT(vocab_size <= 0 || header.tokens == 0 || int64_t(header.max_token_id) < vocab_size)
      << "token shard " << path << ": holds token ids up to " << header.max_token_id
      << " but the model's vocabulary has " << vocab_size << " ids: the shards were made with "
      << "another tokenizer; tokenize the text with the model's tokenizer, or use a model "
      << "whose vocab_size is at least " << int64_t(header.max_token_id) + 1;
  shard.tokens_ = reinterpret_cast<const uint32_t*>(bytes + kShardHeaderBytes);
  return shard;
}

Shard::Shard(Shard&& other) noexcept { *this = std::move(other); }

Shard& Shard::operator=(Shard&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) ::munmap(map_, map_bytes_);
    path_ = std::move(other.path_);
    header_ = other.header_;
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
  }
  return *this;
}

Shard::~Shard() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

ShardManifest shard_manifest_read(const std::string& folder) {
  const fs::path path = fs::path(folder) / kManifestName;
  std::ifstream in(path, std::ios::binary);
  TITAN_CHECK_INPUT(in) << "token shards: " << path.string() << " not found: " << folder
                        << " is not a token shard folder (or its tokenize run did not finish); "
                        << kRetokenizeFix;
  Json json = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  TITAN_CHECK_INPUT(json.is_object() && json.value("format", "") == kManifestFormat)
      << "token shards: " << path.string() << " is not a titan.cpp shard manifest; "
      << kRetokenizeFix;
  ShardManifest manifest;
  try {
    manifest.format_version = json.at("format_version").get<int64_t>();
    TITAN_CHECK_INPUT(manifest.format_version == kShardFormatVersion)
        << "token shards: " << path.string() << ": format version " << manifest.format_version
        << ", this build reads version " << kShardFormatVersion << "; " << kRetokenizeFix;
    manifest.vocab_size = json.at("vocab_size").get<int64_t>();
    manifest.bos_id = json.at("bos_id").get<int32_t>();
    manifest.eos_id = json.at("eos_id").get<int32_t>();
    manifest.tokenizer = json.at("tokenizer").get<std::string>();
    const Json& splits = json.at("splits");
    manifest.train_documents = splits.at("train").at("documents").get<int64_t>();
    manifest.train_tokens = splits.at("train").at("tokens").get<int64_t>();
    manifest.validation_documents = splits.at("validation").at("documents").get<int64_t>();
    manifest.validation_tokens = splits.at("validation").at("tokens").get<int64_t>();
    for (const Json& entry : json.at("shards")) {
      ShardManifest::File file;
      file.name = entry.at("file").get<std::string>();
      const std::string split = entry.at("split").get<std::string>();
      TITAN_CHECK_INPUT(split == "train" || split == "validation")
          << "token shards: " << path.string() << ": shard " << file.name << " has split '"
          << split << "' (train or validation expected); " << kRetokenizeFix;
      file.split = split == "train" ? ShardSplit::Train : ShardSplit::Validation;
      file.tokens = entry.at("tokens").get<int64_t>();
      TITAN_CHECK_INPUT(fs::path(file.name).filename() == fs::path(file.name))
          << "token shards: " << path.string() << ": shard name " << file.name
          << " is not a file name in the folder";
      manifest.files.push_back(std::move(file));
    }
  } catch (const Json::exception& e) {
    TITAN_FAIL_INPUT() << "token shards: " << path.string() << " is malformed (" << e.what()
                       << "); " << kRetokenizeFix;
  }
  return manifest;
}

ShardSet ShardSet::open(const std::string& folder, ShardSplit split, int64_t vocab_size) {
  TITAN_CHECK_INPUT(fs::is_directory(folder))
      << "token shards: folder " << folder << " does not exist; " << kRetokenizeFix;
  ShardSet set;
  set.folder_ = folder;
  set.split_ = split;
  set.vocab_size_ = vocab_size;
  set.manifest_ = shard_manifest_read(folder);
  TITAN_CHECK_INPUT(vocab_size <= 0 || set.manifest_.vocab_size <= vocab_size)
      << "token shards " << folder << " were made with the tokenizer '" << set.manifest_.tokenizer
      << "' (vocab " << set.manifest_.vocab_size << ") but the model's vocabulary has "
      << vocab_size << " ids: use shards made with the model's tokenizer, or set "
      << "model.vocab_size (or a flavor) to at least " << set.manifest_.vocab_size;
  for (const ShardManifest::File& file : set.manifest_.files) {
    if (file.split != split) continue;
    Shard shard = Shard::open((fs::path(folder) / file.name).string(), vocab_size);
    TITAN_CHECK_INPUT(shard.size() == file.tokens)
        << "token shard " << shard.path() << " holds " << shard.size() << " tokens but "
        << folder << "/manifest.json says " << file.tokens << ": the folder mixes two tokenize "
        << "runs; " << kRetokenizeFix;
    set.starts_.push_back(set.total_tokens_);
    set.total_tokens_ += shard.size();
    set.shards_.push_back(std::move(shard));
  }
  return set;
}

void ShardSet::read(int64_t begin, int64_t count, int64_t* out) const {
  TITAN_CHECK(begin >= 0 && count >= 0 && begin + count <= total_tokens_)
      << "token shards " << folder_ << ": read of tokens [" << begin << ", " << begin + count
      << ") outside the " << total_tokens_ << " of the " << shard_split_name(split_) << " split";
  // The shard holding `begin`: the last one that starts at or before it.
  size_t index = size_t(std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin()) - 1;
  while (count > 0) {
    const Shard& shard = shards_[index];
    const int64_t offset = begin - starts_[index];
    const int64_t take = std::min(count, shard.size() - offset);
    const uint32_t* tokens = shard.tokens().data() + offset;
    for (int64_t i = 0; i < take; ++i) {
      const uint32_t id = tokens[i];
      TITAN_CHECK(vocab_size_ <= 0 || int64_t(id) < vocab_size_)
          << "token shard " << shard.path() << ": token " << offset + i << " (byte offset "
          << kShardHeaderBytes + 4 * (offset + i) << ") is id " << id << ", not below the "
          << "model's vocab_size " << vocab_size_ << ", although the header says the largest "
          << "id is " << shard.header().max_token_id << ": the file is corrupt; "
          << kRetokenizeFix;
      out[i] = int64_t(id);
    }
    out += take;
    begin += take;
    count -= take;
    ++index;
  }
}

}  // namespace titan::data

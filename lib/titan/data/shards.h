// Token shards: a corpus tokenized once, stored as flat uint32 token files that every
// rank memory-maps, with a manifest that says what they hold.
//
//   // Write (titan-data tokenize): any encoder works; the tokenizer class is not needed.
//   TokenizeInput input;
//   input.encode = [&](std::string_view text) { return tokenizer.encode(text); };
//   input.bos_id = ...; input.eos_id = ...; input.vocab_size = ...;
//   input.files = {"a.txt", "b.jsonl"};
//   input.out_dir = "assets/data/mine";
//   TokenizeReport report = tokenize_to_shards(input);
//
//   // Read (the loader): opening checks every header against the model's vocabulary.
//   ShardSet train = ShardSet::open("assets/data/mine", ShardSplit::Train, /*vocab_size=*/2048);
//   std::span<const uint32_t> tokens = train.shard(0).tokens();
//
// Folder layout:
//   manifest.json             what the folder holds (docs/data.md shows one); written last
//   train-00000.bin ...       training split, in order
//   validation-00000.bin ...  held-out split (whole documents, chosen from the seed)
//
// Shard file (all integers little-endian; the header is 64 bytes so tokens stay aligned):
//   offset size  field
//        0    8  magic "TTNSHARD"
//        8    4  format version (u32), kShardFormatVersion
//       12    4  token dtype (u32): 1 = uint32 (the only one)
//       16    8  token count (u64)
//       24    4  largest token id in the shard (u32); 0 for an empty shard
//       28    4  reserved, 0
//       32    8  file size in bytes (u64) = 64 + 4 * token count: truncation shows
//       40   16  reserved, 0
//       56    8  header checksum (u64): FNV-1a 64 of bytes 0..55
//       64  4*N  the tokens (u32)
// Each document is written as BOS doc EOS; documents run on across shard boundaries (the
// loader sees one token stream per split).
//
// Failure classes (docs/design.md, "Errors, exit codes, logs"): a missing, truncated or
// foreign file, an unknown version or a header whose largest id is ≥ the model's vocab is
// the same on every rank: InputError (exit 2) naming the file and the fix. A token ≥ the
// vocab found while reading (a header that lies) is titan::Error (exit 1) naming the file
// and the token position.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "titan/core/progress.h"

namespace titan::data {

inline constexpr char kShardMagic[8] = {'T', 'T', 'N', 'S', 'H', 'A', 'R', 'D'};
inline constexpr uint32_t kShardFormatVersion = 1;
inline constexpr uint32_t kShardDtypeUint32 = 1;
inline constexpr int64_t kShardHeaderBytes = 64;
// Tokens per shard file unless TokenizeInput says otherwise: 256 Mi tokens = 1 GiB.
inline constexpr int64_t kDefaultShardTokens = int64_t(1) << 28;

enum class ShardSplit { Train, Validation };
std::string_view shard_split_name(ShardSplit split);  // "train", "validation"

// ---------------------------------------------------------------------------------------
// Writing

struct TokenizeInput {
  // Text -> token ids, without BOS/EOS (tokenize_to_shards adds them).
  std::function<std::vector<int32_t>(std::string_view)> encode;
  int32_t bos_id = 0;
  int32_t eos_id = 0;
  int64_t vocab_size = 0;  // every id must be < vocab_size (checked)
  // Input files: a `*.jsonl` file holds one JSON object per line, its `text` field a
  // document (blank lines are skipped); any other file is one document (its bytes).
  std::vector<std::string> files;
  std::string out_dir;  // created if missing; shards already there are replaced
  // Fraction of the documents held out for validation: round(fraction x documents) of
  // them, at least 1 when fraction > 0 and there are 2 or more documents, never all;
  // which ones is a pure function of (seed, document number) (selection sampling).
  double validation_fraction = 0.01;
  uint64_t seed = 0;
  // Told (input bytes read, all input bytes) after each document and (all, all) at the end;
  // empty: nothing is told. titan-data passes progress_callback("tokenize", "B").
  ProgressCallback progress;
  std::string tokenizer_description;  // recorded in the manifest (e.g. "sotu-2k (BPE, 2048)")
  int64_t max_shard_tokens = kDefaultShardTokens;
};

struct TokenizeReport {
  int64_t documents = 0;  // all documents, both splits
  int64_t train_documents = 0;
  int64_t validation_documents = 0;
  int64_t train_tokens = 0;  // BOS and EOS included
  int64_t validation_tokens = 0;
  int64_t shards = 0;  // files written, both splits
  int64_t input_bytes = 0;
  std::vector<std::string> shard_paths;  // in manifest order
  std::string manifest_path;
};

// Tokenizes `input.files` into shards and a manifest in `input.out_dir`. A missing input
// file, a JSONL line that is not an object with a string `text`, or an id outside
// [0, vocab_size) is an InputError naming the file (and line).
TokenizeReport tokenize_to_shards(const TokenizeInput& input);

// Writes one shard file with a correct header (tests make bad files from good ones).
void shard_write(const std::string& path, std::span<const uint32_t> tokens);

// ---------------------------------------------------------------------------------------
// Reading

struct ShardHeader {
  uint32_t version = 0;
  uint32_t dtype = 0;
  int64_t tokens = 0;
  uint32_t max_token_id = 0;
  int64_t file_bytes = 0;
};

// The 64 header bytes of `header`, checksum included, exactly as shard files hold them
// (tests write bad files with it: a wrong version, a header that lies).
std::array<uint8_t, kShardHeaderBytes> shard_header_encode(const ShardHeader& header);

// One memory-mapped shard file, checked on open. Movable, not copyable.
class Shard {
 public:
  // Opens and checks `path`; vocab_size > 0 also checks the header's largest id.
  static Shard open(const std::string& path, int64_t vocab_size);

  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  ~Shard();

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  int64_t size() const { return header_.tokens; }
  // The tokens as stored (unchecked: ids are checked as the loader copies them).
  std::span<const uint32_t> tokens() const { return {tokens_, size_t(header_.tokens)}; }

 private:
  Shard() = default;
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint32_t* tokens_ = nullptr;
};

// What manifest.json says about one folder.
struct ShardManifest {
  int64_t format_version = 0;
  int64_t vocab_size = 0;
  int32_t bos_id = 0;
  int32_t eos_id = 0;
  std::string tokenizer;  // tokenizer_description
  struct File {
    std::string name;  // relative to the folder
    ShardSplit split = ShardSplit::Train;
    int64_t tokens = 0;
  };
  std::vector<File> files;
  int64_t train_documents = 0, validation_documents = 0;
  int64_t train_tokens = 0, validation_tokens = 0;
};

// Reads `<folder>/manifest.json`; InputError when missing or malformed.
ShardManifest shard_manifest_read(const std::string& folder);

// All shards of one split of a folder, opened and checked, as one token stream.
class ShardSet {
 public:
  // A missing folder or manifest, a manifest vocab > vocab_size, or any bad shard is an
  // InputError naming it. vocab_size is the model's.
  static ShardSet open(const std::string& folder, ShardSplit split, int64_t vocab_size);

  const std::string& folder() const { return folder_; }
  ShardSplit split() const { return split_; }
  const ShardManifest& manifest() const { return manifest_; }
  int64_t vocab_size() const { return vocab_size_; }
  int64_t shard_count() const { return int64_t(shards_.size()); }
  const Shard& shard(int64_t index) const { return shards_[size_t(index)]; }
  int64_t total_tokens() const { return total_tokens_; }

  // Copies tokens [begin, begin + count) of the concatenated stream into out as int64,
  // checking each id against vocab_size (titan::Error naming file and position if not).
  void read(int64_t begin, int64_t count, int64_t* out) const;

 private:
  std::string folder_;
  ShardSplit split_ = ShardSplit::Train;
  ShardManifest manifest_;
  int64_t vocab_size_ = 0;
  std::vector<Shard> shards_;
  std::vector<int64_t> starts_;  // starts_[i]: stream offset of shard i's first token
  int64_t total_tokens_ = 0;
};

}  // namespace titan::data

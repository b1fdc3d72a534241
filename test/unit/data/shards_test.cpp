// Token shards: the file format round trip and its byte layout, every bad file a reader
// must refuse (exit 2 at open, exit 1 for a header that lies), and tokenize_to_shards on
// text and JSONL input with a toy encoder (bytes as ids): documents, split, manifest.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "titan/core/error.h"
#include "titan/data/shard_loader.h"
#include "titan/data/shards.h"

namespace titan::data {
namespace {

namespace fs = std::filesystem;

class TempFolder {
 public:
  TempFolder() {
    std::string pattern = (fs::temp_directory_path() / "titan_shards_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempFolder() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

std::string header_bytes(const ShardHeader& header) {
  const std::array<uint8_t, kShardHeaderBytes> bytes = shard_header_encode(header);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::string token_bytes(const std::vector<uint32_t>& tokens) {
  return std::string(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 4);
}

ShardHeader good_header(const std::vector<uint32_t>& tokens) {
  ShardHeader header;
  header.version = kShardFormatVersion;
  header.dtype = kShardDtypeUint32;
  header.tokens = int64_t(tokens.size());
  header.max_token_id = *std::max_element(tokens.begin(), tokens.end());
  header.file_bytes = kShardHeaderBytes + 4 * header.tokens;
  return header;
}

// The message of the InputError that f throws ("" and a test failure if it throws none).
template <class F>
std::string input_error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected an InputError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an InputError, nothing thrown";
  return "";
}

// Bytes as token ids 3..258 (0 = BOS, 1 = EOS, 2 unused): every document's text can be
// read back from its tokens.
std::vector<int32_t> encode_bytes(std::string_view text) {
  std::vector<int32_t> ids;
  for (unsigned char c : text) ids.push_back(int32_t(c) + 3);
  return ids;
}
constexpr int32_t kBos = 0;
constexpr int32_t kEos = 1;
constexpr int64_t kByteVocab = 259;

TokenizeInput byte_input(std::vector<std::string> files, std::string out_dir) {
  TokenizeInput input;
  input.encode = encode_bytes;
  input.bos_id = kBos;
  input.eos_id = kEos;
  input.vocab_size = kByteVocab;
  input.files = std::move(files);
  input.out_dir = std::move(out_dir);
  input.tokenizer_description = "bytes (test)";
  return input;
}

// The documents (as text) in a split's token stream, split at BOS ... EOS.
std::vector<std::string> documents_of(const ShardSet& set) {
  std::vector<int64_t> stream(size_t(set.total_tokens()));
  set.read(0, set.total_tokens(), stream.data());
  std::vector<std::string> documents;
  std::string current;
  bool inside = false;
  for (int64_t id : stream) {
    if (id == kBos) {
      EXPECT_FALSE(inside) << "BOS inside a document";
      inside = true;
      current.clear();
    } else if (id == kEos) {
      EXPECT_TRUE(inside) << "EOS outside a document";
      inside = false;
      documents.push_back(current);
    } else {
      EXPECT_TRUE(inside) << "token outside a document";
      current.push_back(char(id - 3));
    }
  }
  EXPECT_FALSE(inside) << "the stream ends inside a document";
  return documents;
}

// ---------------------------------------------------------------------------------------
// Format

TEST(ShardFormat, RoundTripKeepsTokensAndHeader) {
  TempFolder folder;
  const std::vector<uint32_t> tokens = {5, 0, 2047, 17, 3, 3, 1000};
  shard_write(folder / "a.bin", tokens);
  const Shard shard = Shard::open(folder / "a.bin", /*vocab_size=*/2048);
  EXPECT_EQ(shard.size(), 7);
  EXPECT_EQ(shard.header().version, kShardFormatVersion);
  EXPECT_EQ(shard.header().dtype, kShardDtypeUint32);
  EXPECT_EQ(shard.header().max_token_id, 2047u);
  EXPECT_EQ(shard.header().file_bytes, 64 + 4 * 7);
  EXPECT_EQ(std::vector<uint32_t>(shard.tokens().begin(), shard.tokens().end()), tokens);
  EXPECT_EQ(int64_t(fs::file_size(folder / "a.bin")), 64 + 4 * 7);
}

TEST(ShardFormat, HeaderBytesFollowTheDocumentedLayout) {
  TempFolder folder;
  shard_write(folder / "a.bin", std::vector<uint32_t>{9, 300, 4});
  const std::string bytes = read_bytes(folder / "a.bin");
  ASSERT_EQ(bytes.size(), 64u + 12u);
  auto u32 = [&](size_t at) { uint32_t v; std::memcpy(&v, bytes.data() + at, 4); return v; };
  auto u64 = [&](size_t at) { uint64_t v; std::memcpy(&v, bytes.data() + at, 8); return v; };
  EXPECT_EQ(bytes.substr(0, 8), "TTNSHARD");
  EXPECT_EQ(u32(8), 1u);     // version
  EXPECT_EQ(u32(12), 1u);    // dtype uint32
  EXPECT_EQ(u64(16), 3u);    // token count
  EXPECT_EQ(u32(24), 300u);  // largest id
  EXPECT_EQ(u32(28), 0u);
  EXPECT_EQ(u64(32), 76u);   // file size
  for (size_t i = 40; i < 56; ++i) EXPECT_EQ(bytes[i], 0) << "reserved byte " << i;
  uint64_t fnv = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < 56; ++i) fnv = (fnv ^ uint8_t(bytes[i])) * 0x100000001b3ull;
  EXPECT_EQ(u64(56), fnv);
  EXPECT_EQ(u32(64), 9u);
  EXPECT_EQ(u32(68), 300u);
  EXPECT_EQ(u32(72), 4u);
}

// ---------------------------------------------------------------------------------------
// Bad files: exit 2 at open, naming the file and the fix

TEST(ShardFormat, IdsAtOrAboveTheVocabInTheHeaderAreInputErrors) {
  TempFolder folder;
  shard_write(folder / "big.bin", std::vector<uint32_t>{1, 2048, 7});
  EXPECT_NO_THROW(Shard::open(folder / "big.bin", 2049));
  const std::string message = input_error_of([&] { Shard::open(folder / "big.bin", 2048); });
  EXPECT_NE(message.find(folder / "big.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("up to 2048"), std::string::npos) << message;
  EXPECT_NE(message.find("tokenize"), std::string::npos) << message;
}

TEST(ShardFormat, TruncatedFilesAreInputErrors) {
  TempFolder folder;
  shard_write(folder / "a.bin", std::vector<uint32_t>{1, 2, 3, 4});
  const std::string whole = read_bytes(folder / "a.bin");
  for (size_t keep : {size_t(0), size_t(10), size_t(63), size_t(64), whole.size() - 1}) {
    write_bytes(folder / "cut.bin", whole.substr(0, keep));
    const std::string message = input_error_of([&] { Shard::open(folder / "cut.bin", 100); });
    EXPECT_NE(message.find(folder / "cut.bin"), std::string::npos) << message;
    EXPECT_NE(message.find("truncated"), std::string::npos) << keep << " bytes: " << message;
  }
  write_bytes(folder / "long.bin", whole + "xxxx");
  EXPECT_NE(input_error_of([&] { Shard::open(folder / "long.bin", 100); }).find("past the end"),
            std::string::npos);
}

TEST(ShardFormat, ForeignFilesAreInputErrors) {
  TempFolder folder;
  write_bytes(folder / "text.bin", std::string(200, 'a'));
  std::string message = input_error_of([&] { Shard::open(folder / "text.bin", 100); });
  EXPECT_NE(message.find(folder / "text.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("not a titan.cpp token shard"), std::string::npos) << message;

  message = input_error_of([&] { Shard::open(folder / "missing.bin", 100); });
  EXPECT_NE(message.find(folder / "missing.bin"), std::string::npos) << message;
}

TEST(ShardFormat, OtherVersionsAndDtypesAreInputErrors) {
  TempFolder folder;
  const std::vector<uint32_t> tokens = {4, 5, 6};
  ShardHeader header = good_header(tokens);
  header.version = kShardFormatVersion + 1;
  write_bytes(folder / "v2.bin", header_bytes(header) + token_bytes(tokens));
  std::string message = input_error_of([&] { Shard::open(folder / "v2.bin", 100); });
  EXPECT_NE(message.find(folder / "v2.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("format version 2"), std::string::npos) << message;

  header = good_header(tokens);
  header.dtype = 2;
  write_bytes(folder / "dtype.bin", header_bytes(header) + token_bytes(tokens));
  message = input_error_of([&] { Shard::open(folder / "dtype.bin", 100); });
  EXPECT_NE(message.find("dtype 2"), std::string::npos) << message;
}

TEST(ShardFormat, CorruptHeadersAreInputErrors) {
  TempFolder folder;
  shard_write(folder / "a.bin", std::vector<uint32_t>{1, 2, 3});
  std::string bytes = read_bytes(folder / "a.bin");
  bytes[16] = 2;  // the token count, without fixing the checksum
  write_bytes(folder / "flipped.bin", bytes);
  EXPECT_NE(input_error_of([&] { Shard::open(folder / "flipped.bin", 100); }).find("checksum"),
            std::string::npos);

  // A self-consistent checksum over a count that disagrees with the file size field.
  ShardHeader header = good_header({1, 2, 3});
  header.file_bytes += 4;
  write_bytes(folder / "sizes.bin", header_bytes(header) + token_bytes({1, 2, 3}));
  EXPECT_NE(input_error_of([&] { Shard::open(folder / "sizes.bin", 100); }).find("corrupt header"),
            std::string::npos);
}

// A header that says the largest id is small while a token is not: opening succeeds (the
// header is all a rank reads up front), reading the batch that holds it fails with a
// titan::Error that is not an InputError (exit 1), naming file and position.
TEST(ShardFormat, HeaderThatLiesAboutTheLargestIdFailsWhenTheTokenIsRead) {
  TempFolder folder;
  write_bytes(folder / "doc.txt", "a document of some forty bytes, more or less");
  TokenizeInput input = byte_input({folder / "doc.txt"}, folder / "shards");
  input.validation_fraction = 0;
  tokenize_to_shards(input);
  const std::string shard_path = folder / "shards/train-00000.bin";
  std::vector<uint32_t> tokens;
  {
    const Shard shard = Shard::open(shard_path, kByteVocab);
    tokens.assign(shard.tokens().begin(), shard.tokens().end());
  }
  ASSERT_GT(tokens.size(), 20u);
  tokens[17] = 500;                            // not in the model's vocab of 259
  ShardHeader header = good_header(tokens);
  header.max_token_id = 200;                   // the lie
  write_bytes(shard_path, header_bytes(header) + token_bytes(tokens));

  const ShardSet set = ShardSet::open(folder / "shards", ShardSplit::Train, kByteVocab);
  std::vector<int64_t> out(tokens.size());
  EXPECT_NO_THROW(set.read(0, 17, out.data()));  // the tokens before it are fine
  try {
    set.read(0, int64_t(tokens.size()), out.data());
    ADD_FAILURE() << "the bad token was not found";
  } catch (const InputError& e) {
    ADD_FAILURE() << "a lying header is a one-rank failure (exit 1), got an InputError: " << e.what();
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(shard_path), std::string::npos) << message;
    EXPECT_NE(message.find("token 17 "), std::string::npos) << message;
    EXPECT_NE(message.find("id 500"), std::string::npos) << message;
  }

  // Through the loader: the batch that holds the token fails the same way.
  ShardBatchSource loader(std::make_shared<const ShardSet>(
                              ShardSet::open(folder / "shards", ShardSplit::Train, kByteVocab)),
                          0, 1, int64_t(tokens.size()) - 1);
  EXPECT_THROW(
      {
        try {
          loader.next();
        } catch (const InputError&) {
          ADD_FAILURE() << "expected titan::Error, not InputError";
        }
      },
      Error);
}

// ---------------------------------------------------------------------------------------
// tokenize_to_shards

TEST(TokenizeToShards, TextFilesAreOneDocumentEachJoinedAsBosDocEos) {
  TempFolder folder;
  write_bytes(folder / "a.txt", "first document\nwith two lines\n");
  write_bytes(folder / "b.txt", "second");
  write_bytes(folder / "empty.txt", "");
  TokenizeInput input = byte_input({folder / "a.txt", folder / "b.txt", folder / "empty.txt"},
                                   folder / "out");
  input.validation_fraction = 0;
  const TokenizeReport report = tokenize_to_shards(input);
  EXPECT_EQ(report.documents, 3);
  EXPECT_EQ(report.train_documents, 3);
  EXPECT_EQ(report.validation_documents, 0);
  EXPECT_EQ(report.train_tokens, (30 + 2) + (6 + 2) + 2);
  EXPECT_EQ(report.validation_tokens, 0);
  EXPECT_EQ(report.shards, 1);
  EXPECT_EQ(report.input_bytes, 36);

  const ShardSet set = ShardSet::open(folder / "out", ShardSplit::Train, kByteVocab);
  EXPECT_EQ(documents_of(set),
            (std::vector<std::string>{"first document\nwith two lines\n", "second", ""}));
  const ShardSet validation = ShardSet::open(folder / "out", ShardSplit::Validation, kByteVocab);
  EXPECT_EQ(validation.total_tokens(), 0);
  EXPECT_EQ(validation.shard_count(), 0);
}

// titan-data's progress: input bytes per document, below the total until one last call once
// the shards and manifest are written.
TEST(TokenizeToShards, ProgressIsToldBytesPerDocumentAndEndsOnceAtTheTotal) {
  TempFolder folder;
  write_bytes(folder / "a.txt", "first document\nwith two lines\n");
  write_bytes(folder / "b.txt", "second");
  std::vector<std::pair<int64_t, int64_t>> told;
  TokenizeInput input = byte_input({folder / "a.txt", folder / "b.txt"}, folder / "out");
  input.progress = [&](int64_t done, int64_t total) {
    told.emplace_back(done, total);
    if (done == total) {
      EXPECT_TRUE(fs::exists(fs::path(folder / "out") / "manifest.json"));
    }
  };
  tokenize_to_shards(input);
  EXPECT_EQ(told, (std::vector<std::pair<int64_t, int64_t>>{{30, 36}, {36, 36}}));
}

TEST(TokenizeToShards, JsonlLinesAreDocumentsFromTheirTextField) {
  TempFolder folder;
  write_bytes(folder / "docs.jsonl",
              "{\"text\": \"one\", \"id\": 1}\n"
              "\n"
              "{\"id\": 2, \"text\": \"tw\\u00f6 \\\"quoted\\\"\"}\n"
              "  \n"
              "{\"text\": \"three\"}");  // no final newline
  write_bytes(folder / "plain.txt", "{\"text\": \"not parsed\"}");
  TokenizeInput input = byte_input({folder / "docs.jsonl", folder / "plain.txt"}, folder / "out");
  input.validation_fraction = 0;
  const TokenizeReport report = tokenize_to_shards(input);
  EXPECT_EQ(report.documents, 4);
  const ShardSet set = ShardSet::open(folder / "out", ShardSplit::Train, kByteVocab);
  EXPECT_EQ(documents_of(set), (std::vector<std::string>{"one", "tw\xc3\xb6 \"quoted\"", "three",
                                                         "{\"text\": \"not parsed\"}"}));
}

TEST(TokenizeToShards, BadInputIsAnInputErrorNamingTheFileAndLine) {
  TempFolder folder;
  write_bytes(folder / "bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": 3}\n");
  std::string message = input_error_of(
      [&] { tokenize_to_shards(byte_input({folder / "bad.jsonl"}, folder / "out")); });
  EXPECT_NE(message.find(folder / "bad.jsonl:2"), std::string::npos) << message;

  write_bytes(folder / "broken.jsonl", "{\"text\": \"fine\"}\n\n{\"text\": \"unterminated}\n");
  message = input_error_of(
      [&] { tokenize_to_shards(byte_input({folder / "broken.jsonl"}, folder / "out")); });
  EXPECT_NE(message.find(folder / "broken.jsonl:3"), std::string::npos) << message;

  message = input_error_of(
      [&] { tokenize_to_shards(byte_input({folder / "absent.txt"}, folder / "out")); });
  EXPECT_NE(message.find(folder / "absent.txt"), std::string::npos) << message;

  write_bytes(folder / "a.txt", "abc");
  TokenizeInput input = byte_input({folder / "a.txt"}, folder / "out");
  input.vocab_size = 50;  // bytes encode to ids up to 258
  input.validation_fraction = 0;
  message = input_error_of([&] { tokenize_to_shards(input); });
  EXPECT_NE(message.find(folder / "a.txt"), std::string::npos) << message;
  EXPECT_NE(message.find("outside the vocabulary"), std::string::npos) << message;
}

TEST(TokenizeToShards, ValidationSplitHoldsWholeDocumentsChosenBySeed) {
  TempFolder folder;
  std::vector<std::string> files;
  std::set<std::string> all;
  for (int i = 0; i < 40; ++i) {
    const std::string text = "document number " + std::to_string(i) + std::string(size_t(i), '.');
    files.push_back(folder / ("doc" + std::to_string(i) + ".txt"));
    write_bytes(files.back(), text);
    all.insert(text);
  }
  auto held_out = [&](uint64_t seed, const std::string& out) {
    TokenizeInput input = byte_input(files, folder / out);
    input.validation_fraction = 0.1;
    input.seed = seed;
    const TokenizeReport report = tokenize_to_shards(input);
    EXPECT_EQ(report.documents, 40);
    EXPECT_EQ(report.validation_documents, 4);  // round(0.1 x 40)
    EXPECT_EQ(report.train_documents, 36);
    const std::vector<std::string> train =
        documents_of(ShardSet::open(folder / out, ShardSplit::Train, kByteVocab));
    const std::vector<std::string> validation =
        documents_of(ShardSet::open(folder / out, ShardSplit::Validation, kByteVocab));
    EXPECT_EQ(int64_t(validation.size()), report.validation_documents);
    // Each document whole, in exactly one split.
    std::multiset<std::string> both(train.begin(), train.end());
    both.insert(validation.begin(), validation.end());
    EXPECT_EQ(both, std::multiset<std::string>(all.begin(), all.end()));
    return std::set<std::string>(validation.begin(), validation.end());
  };
  const std::set<std::string> seed0 = held_out(0, "a");
  EXPECT_EQ(held_out(0, "b"), seed0);  // deterministic
  bool any_other = false;              // and the seed chooses
  for (uint64_t seed = 1; seed <= 4; ++seed) any_other |= held_out(seed, "c" + std::to_string(seed)) != seed0;
  EXPECT_TRUE(any_other);

  // A small fraction of few documents still holds one out; one document is never held out.
  TokenizeInput input = byte_input({files[0], files[1], files[2]}, folder / "few");
  EXPECT_EQ(tokenize_to_shards(input).validation_documents, 1);  // 0.01 x 3 rounds to 0
  input = byte_input({files[0]}, folder / "one");
  EXPECT_EQ(tokenize_to_shards(input).validation_documents, 0);
}

TEST(TokenizeToShards, ShardsAreBoundedAndTheManifestDescribesThem) {
  TempFolder folder;
  std::vector<std::string> files;
  for (int i = 0; i < 12; ++i) {
    files.push_back(folder / ("d" + std::to_string(i) + ".txt"));
    write_bytes(files.back(), std::string(size_t(5 + i), char('a' + i)));
  }
  TokenizeInput input = byte_input(files, folder / "out");
  input.max_shard_tokens = 16;
  input.validation_fraction = 0.25;
  input.seed = 7;
  input.tokenizer_description = "bytes as ids (test)";
  const TokenizeReport report = tokenize_to_shards(input);
  EXPECT_EQ(report.validation_documents, 3);
  EXPECT_EQ(report.train_tokens + report.validation_tokens, (5 + 16) * 12 / 2 + 2 * 12);
  const int64_t train_shards = (report.train_tokens + 15) / 16;
  const int64_t validation_shards = (report.validation_tokens + 15) / 16;
  EXPECT_EQ(report.shards, train_shards + validation_shards);
  ASSERT_EQ(int64_t(report.shard_paths.size()), report.shards);
  for (const std::string& path : report.shard_paths) {
    EXPECT_LE(Shard::open(path, kByteVocab).size(), 16) << path;
  }

  // The manifest as JSON: the keys a user reads.
  std::ifstream in(report.manifest_path);
  const nlohmann::json json = nlohmann::json::parse(in);
  EXPECT_EQ(json["format"], "titan.cpp token shards");
  EXPECT_EQ(json["format_version"], 1);
  EXPECT_EQ(json["token_dtype"], "uint32");
  EXPECT_EQ(json["tokenizer"], "bytes as ids (test)");
  EXPECT_EQ(json["vocab_size"], kByteVocab);
  EXPECT_EQ(json["bos_id"], kBos);
  EXPECT_EQ(json["eos_id"], kEos);
  EXPECT_EQ(json["documents"], 12);
  EXPECT_EQ(json["seed"], 7);
  EXPECT_EQ(json["splits"]["train"]["documents"], 9);
  EXPECT_EQ(json["splits"]["train"]["tokens"], report.train_tokens);
  EXPECT_EQ(json["splits"]["train"]["shards"], train_shards);
  EXPECT_EQ(json["splits"]["validation"]["documents"], 3);
  EXPECT_EQ(json["splits"]["validation"]["tokens"], report.validation_tokens);
  ASSERT_EQ(int64_t(json["shards"].size()), report.shards);
  EXPECT_EQ(json["shards"][0]["file"], "train-00000.bin");
  EXPECT_EQ(json["shards"][0]["split"], "train");
  EXPECT_EQ(json["shards"][0]["tokens"], 16);
  EXPECT_EQ(json["shards"][train_shards]["file"], "validation-00000.bin");

  // The reader's view: the split's shards in order, one stream.
  const ShardManifest manifest = shard_manifest_read(folder / "out");
  EXPECT_EQ(manifest.tokenizer, "bytes as ids (test)");
  EXPECT_EQ(manifest.vocab_size, kByteVocab);
  EXPECT_EQ(int64_t(manifest.files.size()), report.shards);
  const ShardSet train = ShardSet::open(folder / "out", ShardSplit::Train, kByteVocab);
  EXPECT_EQ(train.shard_count(), train_shards);
  EXPECT_EQ(train.total_tokens(), report.train_tokens);
  EXPECT_EQ(documents_of(train).size(), 9u);  // documents run on across shard boundaries

  // A second run into the same folder replaces the first: no stale shard is left.
  input.max_shard_tokens = 1000;
  EXPECT_EQ(tokenize_to_shards(input).shards, 2);
  int64_t bins = 0;
  for (const auto& entry : fs::directory_iterator(folder / "out")) bins += entry.path().extension() == ".bin";
  EXPECT_EQ(bins, 2);
}

TEST(ShardSet, RefusesMissingFoldersManifestsAndSmallerVocabularies) {
  TempFolder folder;
  std::string message =
      input_error_of([&] { ShardSet::open(folder / "nowhere", ShardSplit::Train, 100); });
  EXPECT_NE(message.find(folder / "nowhere"), std::string::npos) << message;

  fs::create_directories(folder / "empty");
  message = input_error_of([&] { ShardSet::open(folder / "empty", ShardSplit::Train, 100); });
  EXPECT_NE(message.find("manifest.json"), std::string::npos) << message;

  write_bytes(folder / "doc.txt", "AB");  // ids 68 and 69 only
  TokenizeInput input = byte_input({folder / "doc.txt"}, folder / "out");
  tokenize_to_shards(input);
  // The manifest's vocab (259) is larger than the model's (100), although these ids fit.
  message = input_error_of([&] { ShardSet::open(folder / "out", ShardSplit::Train, 100); });
  EXPECT_NE(message.find("vocab 259"), std::string::npos) << message;
  EXPECT_NE(message.find("bytes (test)"), std::string::npos) << message;
  EXPECT_NO_THROW(ShardSet::open(folder / "out", ShardSplit::Train, 4096));  // a larger model vocab is fine

  // A shard replaced by one from another run: the manifest's count disagrees.
  shard_write(folder / "out/train-00000.bin", std::vector<uint32_t>{0, 5, 1});
  message = input_error_of([&] { ShardSet::open(folder / "out", ShardSplit::Train, kByteVocab); });
  EXPECT_NE(message.find("train-00000.bin"), std::string::npos) << message;

  // A shard deleted from the folder.
  fs::remove(folder / "out/train-00000.bin");
  message = input_error_of([&] { ShardSet::open(folder / "out", ShardSplit::Train, kByteVocab); });
  EXPECT_NE(message.find("train-00000.bin"), std::string::npos) << message;
}

}  // namespace
}  // namespace titan::data

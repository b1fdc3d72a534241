// The token-shard loader: windows cut from the stream, each window once per epoch, runs
// that repeat, seek equal to replay, one global batch for dp = 1, 2 and 4, the epoch
// rollover log, and make_batch_source's choice of source from the config.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <algorithm>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "titan/core/error.h"
#include "titan/data/shard_loader.h"
#include "titan/data/shards.h"
#include "titan/data/sources.h"
#include "titan/data/synthetic.h"
#include "support/train_process.h"

namespace titan::data {
namespace {

namespace fs = std::filesystem;

class TempFolder {
 public:
  TempFolder() {
    std::string pattern = (fs::temp_directory_path() / "titan_loader_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempFolder() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<int64_t> values(const Tensor& t) {
  const int64_t* p = t.data<int64_t>();
  return std::vector<int64_t>(p, p + t.numel());
}

bool same(const TokenBatch& a, const TokenBatch& b) {
  return values(a.inputs) == values(b.inputs) && values(a.labels) == values(b.labels);
}

// One document whose encoding is the ids 2, 3, ..., kDocumentTokens + 1, with BOS 0 and
// EOS 1: stream position s holds token s + 1 for 1 <= s <= kDocumentTokens, so every
// window is recognisable by its tokens. Shards of 37 tokens make windows straddle files.
constexpr int64_t kDocumentTokens = 500;
constexpr int64_t kStreamTokens = kDocumentTokens + 2;
constexpr int64_t kVocab = kDocumentTokens + 2;

int64_t stream_token(int64_t s) {
  if (s == 0) return 0;
  if (s == kStreamTokens - 1) return 1;
  return s + 1;
}

class Loader : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string text_path = folder_ / "doc.txt";
    std::ofstream(text_path) << "ignored by the encoder";
    TokenizeInput input;
    input.encode = [](std::string_view) {
      std::vector<int32_t> ids;
      for (int32_t i = 0; i < kDocumentTokens; ++i) ids.push_back(i + 2);
      return ids;
    };
    input.bos_id = 0;
    input.eos_id = 1;
    input.vocab_size = kVocab;
    input.files = {text_path};
    input.out_dir = folder_ / "shards";
    input.validation_fraction = 0;
    input.tokenizer_description = "counting (test)";
    input.max_shard_tokens = 37;
    tokenize_to_shards(input);
    shards_ = std::make_shared<const ShardSet>(
        ShardSet::open(folder_ / "shards", ShardSplit::Train, kVocab));
  }

  ShardBatchSource loader(int64_t batch, int64_t seq_len, uint64_t seed = 0, int64_t rank = 0,
                          int64_t degree = 1) const {
    return ShardBatchSource(shards_, seed, batch, seq_len, rank, degree);
  }

  TempFolder folder_;
  std::shared_ptr<const ShardSet> shards_;
};

// The window a row was cut from, checking that the row is exactly that window.
int64_t window_of_row(const TokenBatch& batch, int64_t row, int64_t seq_len) {
  const std::vector<int64_t> inputs = values(batch.inputs), labels = values(batch.labels);
  const int64_t* in = inputs.data() + row * seq_len;
  const int64_t* out = labels.data() + row * seq_len;
  const int64_t window = (in[1] - 2) / (seq_len + 1);  // position 1 holds token start + 2
  const int64_t start = window * (seq_len + 1);
  for (int64_t t = 0; t < seq_len; ++t) {
    EXPECT_EQ(in[t], stream_token(start + t)) << "row " << row << " position " << t;
    EXPECT_EQ(out[t], stream_token(start + t + 1)) << "row " << row << " position " << t;
  }
  return window;
}

TEST_F(Loader, RowsAreWholeWindowsInputsFirstTLabelsLastT) {
  ShardBatchSource source = loader(4, 15);
  EXPECT_EQ(shards_->shard_count(), (kStreamTokens + 36) / 37);
  EXPECT_EQ(source.windows_per_epoch(), kStreamTokens / 16);
  const TokenBatch batch = source.next();
  EXPECT_EQ(batch.inputs.shape(), (Shape{4, 15}));
  EXPECT_EQ(batch.labels.shape(), (Shape{4, 15}));
  EXPECT_EQ(batch.inputs.dtype(), DType::I64);
  for (int64_t row = 0; row < 4; ++row) {
    EXPECT_EQ(window_of_row(batch, row, 15), source.window_of(row));
  }
}

TEST_F(Loader, EachWindowExactlyOncePerEpochInANewOrderEachEpoch) {
  constexpr int64_t kSeqLen = 9, kBatch = 3;
  ShardBatchSource source = loader(kBatch, kSeqLen, /*seed=*/5);
  const int64_t windows = source.windows_per_epoch();
  ASSERT_EQ(windows, kStreamTokens / 10);  // 50: not a multiple of the batch
  std::vector<int64_t> order;
  while (int64_t(order.size()) < 3 * windows) {
    const TokenBatch batch = source.next();
    for (int64_t row = 0; row < kBatch; ++row) order.push_back(window_of_row(batch, row, kSeqLen));
  }
  std::vector<std::vector<int64_t>> epochs;
  for (int64_t e = 0; e < 3; ++e) {
    std::vector<int64_t> epoch(order.begin() + e * windows, order.begin() + (e + 1) * windows);
    epochs.push_back(epoch);
    std::sort(epoch.begin(), epoch.end());
    for (int64_t w = 0; w < windows; ++w) ASSERT_EQ(epoch[size_t(w)], w) << "epoch " << e;
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  std::vector<int64_t> identity(static_cast<size_t>(windows));
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(epochs[0], identity);  // shuffled
}

TEST(ShardWindowPermute, IsAPermutationForEverySize) {
  for (int64_t size = 1; size <= 300; ++size) {
    for (uint64_t seed : {uint64_t(0), uint64_t(12345)}) {
      std::vector<int64_t> seen(static_cast<size_t>(size), 0);
      for (int64_t i = 0; i < size; ++i) {
        const int64_t j = shard_window_permute(i, size, seed, /*epoch=*/size % 3);
        ASSERT_GE(j, 0);
        ASSERT_LT(j, size);
        ++seen[size_t(j)];
      }
      for (int64_t j = 0; j < size; ++j) ASSERT_EQ(seen[size_t(j)], 1) << "size " << size;
    }
  }
  // Large sizes stay in range (and cycle walking ends).
  const int64_t big = (int64_t(1) << 40) + 3;
  for (int64_t i = 0; i < 1000; ++i) {
    const int64_t j = shard_window_permute(big - 1 - i, big, 9, 2);
    ASSERT_GE(j, 0);
    ASSERT_LT(j, big);
  }
}

TEST_F(Loader, RunsRepeatAndTheSeedChangesTheOrder) {
  ShardBatchSource a = loader(4, 15, 3), b = loader(4, 15, 3), c = loader(4, 15, 4);
  bool any_different = false;
  for (int i = 0; i < 12; ++i) {  // 48 sequences of 31 windows: into the second epoch
    const TokenBatch x = a.next(), y = b.next(), z = c.next();
    EXPECT_TRUE(same(x, y)) << "batch " << i;
    any_different |= !same(x, z);
  }
  EXPECT_TRUE(any_different);
}

TEST_F(Loader, SeekThenNextIsTheKthBatchOfAFreshLoader) {
  ShardBatchSource replay = loader(3, 20, 1);
  std::vector<TokenBatch> batches;
  for (int i = 0; i < 15; ++i) batches.push_back(replay.next());  // 45 sequences, 23 windows
  EXPECT_EQ(replay.batches_served(), 15);
  for (int64_t k : {0, 1, 7, 8, 14}) {
    ShardBatchSource resumed = loader(3, 20, 1);
    resumed.seek(k);
    EXPECT_EQ(resumed.batches_served(), k);
    EXPECT_TRUE(same(resumed.next(), batches[size_t(k)])) << "seek " << k;
    EXPECT_EQ(resumed.batches_served(), k + 1);
  }
  // Seeking back replays too.
  replay.seek(2);
  EXPECT_TRUE(same(replay.next(), batches[2]));
}

TEST_F(Loader, GlobalBatchIsTheSameForDataParallelOneTwoAndFour) {
  constexpr int64_t kGlobal = 8, kSeqLen = 11;
  constexpr int kSteps = 10;  // 80 sequences of 41 windows: across two epoch boundaries
  ShardBatchSource one = loader(kGlobal, kSeqLen, 2);
  std::vector<std::vector<int64_t>> reference;
  for (int step = 0; step < kSteps; ++step) reference.push_back(values(one.next().inputs));
  for (int64_t degree : {2, 4}) {
    std::vector<ShardBatchSource> ranks;
    for (int64_t rank = 0; rank < degree; ++rank) {
      ranks.push_back(loader(kGlobal / degree, kSeqLen, 2, rank, degree));
    }
    for (int step = 0; step < kSteps; ++step) {
      std::vector<int64_t> global;
      for (ShardBatchSource& rank : ranks) {
        const std::vector<int64_t> local = values(rank.next().inputs);
        global.insert(global.end(), local.begin(), local.end());
      }
      EXPECT_EQ(global, reference[size_t(step)]) << "dp " << degree << ", step " << step;
    }
  }
}

TEST_F(Loader, EpochRolloverIsLoggedOncePerEpoch) {
  ShardBatchSource source = loader(4, 49);  // 10 windows of 50 tokens
  ASSERT_EQ(source.windows_per_epoch(), 10);
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 8; ++i) source.next();  // 32 sequences: epochs 1 to 4
  const std::string log = ::testing::internal::GetCapturedStderr();
  auto count = [&](const std::string& needle) {
    int64_t n = 0;
    for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("begins"), 3) << log;
  EXPECT_EQ(count("epoch 2 begins"), 1) << log;
  EXPECT_EQ(count("epoch 3 begins"), 1) << log;
  EXPECT_EQ(count("epoch 4 begins"), 1) << log;
  EXPECT_NE(log.find(shards_->folder()), std::string::npos) << log;
  EXPECT_EQ(source.epoch(), 3);
}

TEST_F(Loader, TooFewTokensForOneWindowIsAnInputError) {
  EXPECT_THROW(loader(1, kStreamTokens), InputError);
  EXPECT_NO_THROW(loader(1, kStreamTokens - 1));
}

// ---------------------------------------------------------------------------------------
// make_batch_source

config::JobConfig job(int64_t batch, int64_t seq_len) {
  config::JobConfig config;
  config.training.local_batch_size = batch;
  config.training.seq_len = seq_len;
  config.debug.seed = 4;
  return config;
}

TEST_F(Loader, MakeBatchSourceReadsDatasetPathWithTheConfigSeed) {
  config::JobConfig config = job(2, 15);
  config.training.dataset = "synthetic";  // dataset_path wins
  config.training.dataset_path = folder_ / "shards";
  std::unique_ptr<BatchSource> source = make_batch_source(config, kVocab);
  ASSERT_NE(dynamic_cast<ShardBatchSource*>(source.get()), nullptr) << source->describe();
  EXPECT_NE(source->describe().find(folder_ / "shards"), std::string::npos);
  ShardBatchSource expected = loader(2, 15, /*seed=*/4);
  EXPECT_TRUE(same(source->next(), expected.next()));

  // Ranks of a data-parallel group take their slices.
  std::unique_ptr<BatchSource> rank1 = make_batch_source(config, kVocab, 1, 2);
  ShardBatchSource expected1 = loader(2, 15, 4, 1, 2);
  EXPECT_TRUE(same(rank1->next(), expected1.next()));
}

TEST_F(Loader, MakeBatchSourceChecksTheShardsAgainstTheModelVocab) {
  config::JobConfig config = job(2, 15);
  config.training.dataset_path = folder_ / "shards";
  EXPECT_THROW(make_batch_source(config, kVocab - 1), InputError);
  EXPECT_NO_THROW(make_batch_source(config, kVocab + 100));
}

TEST(MakeBatchSource, SyntheticNeedsNoFilesAndObeysTheRankRule) {
  config::JobConfig config = job(2, 8);
  config.training.dataset = "synthetic";
  std::unique_ptr<BatchSource> source = make_batch_source(config, 64, 1, 2);
  ASSERT_NE(dynamic_cast<SyntheticBatchSource*>(source.get()), nullptr);
  SyntheticBatchSource expected(4, 64, 2, 8, 1, 2);
  EXPECT_TRUE(same(source->next(), expected.next()));
}

// A dataset name reads ./assets/data/NAME relative to the current directory.
TEST_F(Loader, MakeBatchSourceFindsNamedDatasetsUnderAssetsData) {
  const fs::path saved = fs::current_path();
  fs::create_directories(folder_.path() / "assets/data");
  fs::rename(folder_ / "shards", folder_.path() / "assets/data/counting");
  fs::current_path(folder_.path());
  config::JobConfig config = job(2, 15);
  config.training.dataset = "counting";
  std::unique_ptr<BatchSource> source;
  EXPECT_NO_THROW(source = make_batch_source(config, kVocab));
  if (source) {
    EXPECT_NE(source->describe().find("assets/data/counting"), std::string::npos);
  }

  config.training.dataset = "sotu_missing";
  try {
    make_batch_source(config, kVocab);
    ADD_FAILURE() << "no error for a missing dataset folder";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("training.dataset"), std::string::npos) << message;
    EXPECT_NE(message.find("assets/data/sotu_missing"), std::string::npos) << message;
    EXPECT_NE(message.find("tools/fetch_assets.sh"), std::string::npos) << message;
  }
  fs::current_path(saved);

  config.training.dataset_path = (folder_.path() / "no_such_folder").string();
  try {
    make_batch_source(config, kVocab);
    ADD_FAILURE() << "no error for a missing dataset_path";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("training.dataset_path"), std::string::npos) << message;
    EXPECT_NE(message.find("no_such_folder"), std::string::npos) << message;
  }
}


// The whole path through titan-train: it trains on shards, and the exit codes of docs/design.md's
// table hold for a shard that does not fit the model (2) and one whose header lies (1).
TEST_F(Loader, TitanTrainTrainsOnShardsWithTheDocumentedExitCodes) {
  auto train = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> arguments = {
        "--model.flavor", "tiny", "--training.dataset_path", folder_ / "shards",
        "--training.steps", "2", "--training.seq_len", "15", "--training.local_batch_size", "2",
        "--metrics.peak_tflops", "1", "--metrics.log_freq", "1",
        "--activation_checkpoint.mode", "none", "--job.dump_folder", folder_ / "dump"};
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    return testing::run_titan_train(arguments);
  };
  testing::ProcessResult result = train({});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("token shards " + (folder_ / "shards")), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("step: 2 "), std::string::npos) << result.err;

  result = train({"--model.vocab_size", "300"});  // the shards' manifest says 502
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("vocab 502"), std::string::npos) << result.err;

  // Rewrite the first shard with an id past the vocab and a header that hides it.
  const std::string path = folder_ / "shards/train-00000.bin";
  std::vector<uint32_t> tokens;
  {
    const Shard shard = Shard::open(path, kVocab);
    tokens.assign(shard.tokens().begin(), shard.tokens().end());
  }
  tokens[5] = 4000;
  ShardHeader header;
  header.version = kShardFormatVersion;
  header.dtype = kShardDtypeUint32;
  header.tokens = int64_t(tokens.size());
  header.max_token_id = 40;
  header.file_bytes = kShardHeaderBytes + 4 * header.tokens;
  const std::array<uint8_t, kShardHeaderBytes> bytes = shard_header_encode(header);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size() * 4));
  }
  result = train({"--training.steps", "40"});  // 40 x 2 sequences: every window is read
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_NE(result.err.find(path), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("token 5 "), std::string::npos) << result.err;
}

}  // namespace
}  // namespace titan::data

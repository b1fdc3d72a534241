// The BPE trainer: exact vocabulary size, determinism, tie-breaking by bytes, incremental
// pair counts against a naive trainer that recounts everything, and a tokenizer.json the
// loader reads and that round-trips text.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "support/train_process.h"
#include "titan/core/error.h"
#include "titan/data/bpe_trainer.h"
#include "titan/data/pretokenizer.h"
#include "titan/data/tokenizer.h"
#include "titan/data/tokenizer_text.h"

namespace titan::data {
namespace {

std::string random_text(uint32_t seed, size_t words) {
  std::mt19937 rng(seed);
  const std::vector<std::string> vocabulary = {"the", "of", "and", "union", "state", "congress",
                                               "people", "nation", "war", "peace", "1776", "we're",
                                               "Mr.", "it's", "\xC3\xA9t\xC3\xA9", "\xE4\xB8\xAD"};
  std::string text;
  for (size_t i = 0; i < words; ++i) {
    text += vocabulary[rng() % vocabulary.size()];
    const uint32_t gap = rng() % 10;
    text += gap == 0 ? ",\n" : gap == 1 ? ".  " : " ";
  }
  return text;
}

BpeTrainingResult train(const std::vector<std::string>& texts, int64_t vocab_size) {
  BpeTrainer trainer({.vocab_size = vocab_size});
  for (const std::string& text : texts) trainer.add_text(text);
  return trainer.train();
}

Tokenizer load_result(const BpeTrainingResult& result) {
  return Tokenizer::from_text(bpe_tokenizer_json(result), TokenizerFormat::HfJson, "trained");
}

// The naive trainer: recount every pair over every piece before each merge.
std::vector<std::pair<std::string, std::string>> naive_merges(const std::string& text, int merges) {
  const PreTokenizer pre(kLlama3Pattern);
  std::vector<TextPiece> pieces;
  pre.pieces(text, pieces);
  std::vector<std::vector<std::string>> words;
  for (const TextPiece& p : pieces) {
    std::vector<std::string> symbols;
    for (uint32_t i = p.begin; i < p.end; ++i) symbols.emplace_back(1, text[i]);
    words.push_back(symbols);
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (int m = 0; m < merges; ++m) {
    std::map<std::pair<std::string, std::string>, int64_t> counts;  // ordered by bytes
    for (const auto& w : words) {
      for (size_t i = 0; i + 1 < w.size(); ++i) ++counts[{w[i], w[i + 1]}];
    }
    if (counts.empty()) break;
    auto best = counts.begin();
    for (auto it = counts.begin(); it != counts.end(); ++it) {
      if (it->second > best->second) best = it;  // strict: the first in byte order wins ties
    }
    out.push_back(best->first);
    for (auto& w : words) {
      std::vector<std::string> merged;
      for (size_t i = 0; i < w.size(); ++i) {
        if (i + 1 < w.size() && w[i] == best->first.first && w[i + 1] == best->first.second) {
          merged.push_back(w[i] + w[i + 1]);
          ++i;
        } else {
          merged.push_back(w[i]);
        }
      }
      w = merged;
    }
  }
  return out;
}

TEST(BpeTrainer, VocabSizeCountsBytesMergesAndSpecialTokensExactly) {
  const BpeTrainingResult result = train({random_text(1, 3000)}, 300);
  EXPECT_EQ(result.vocab_size(), 300);
  EXPECT_EQ(result.merges.size(), 300u - 256u - 2u);
  EXPECT_EQ(result.reserved_fillers, 0);
  const Tokenizer tok = load_result(result);
  EXPECT_EQ(tok.vocab_size(), 300);
  EXPECT_EQ(tok.bos_id(), 298);
  EXPECT_EQ(tok.eos_id(), 299);
  EXPECT_EQ(tok.token_bytes(0), "!");  // bytes numbered in GPT-2's order, as Llama 3 does
}

TEST(BpeTrainer, IncrementalCountsGiveTheNaiveTrainersMerges) {
  const std::string text = random_text(2, 1500);
  const BpeTrainingResult result = train({text}, 256 + 2 + 60);
  const auto expected = naive_merges(text, 60);
  ASSERT_EQ(result.merges.size(), expected.size());
  for (size_t m = 0; m < expected.size(); ++m) {
    EXPECT_EQ(result.token_bytes[size_t(result.merges[m].first)], expected[m].first) << "merge " << m;
    EXPECT_EQ(result.token_bytes[size_t(result.merges[m].second)], expected[m].second) << "merge " << m;
  }
}

TEST(BpeTrainer, TiesGoToTheFirstPairInByteOrder) {
  // Pieces "ab" and " cd": three pairs, each seen once.
  const BpeTrainingResult result = train({"ab cd"}, 256 + 2 + 3);
  ASSERT_EQ(result.merges.size(), 3u);
  std::vector<std::string> made;
  for (size_t m = 0; m < 3; ++m) made.push_back(result.token_bytes[256 + m]);
  EXPECT_EQ(made, (std::vector<std::string>{" c", " cd", "ab"}));
}

TEST(BpeTrainer, DeterministicWhateverTheOrderOfTheTexts) {
  const std::vector<std::string> texts = {random_text(3, 800), random_text(4, 800), random_text(5, 800)};
  const std::string once = bpe_tokenizer_json(train(texts, 400));
  EXPECT_EQ(bpe_tokenizer_json(train(texts, 400)), once);
  const std::vector<std::string> reversed(texts.rbegin(), texts.rend());
  EXPECT_EQ(bpe_tokenizer_json(train(reversed, 400)), once);
}

TEST(BpeTrainer, TrainedTokenizerRoundTripsAndCompresses) {
  const std::string text = random_text(6, 4000);
  const Tokenizer tok = load_result(train({text}, 512));
  const std::vector<int32_t> ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_LT(ids.size(), text.size() / 3);  // the merges learned the words
  const std::string unseen = "Unseen words, digits 0123456789, emoji \xF0\x9F\x98\x80 and \xFF bytes";
  EXPECT_EQ(tok.decode(tok.encode(unseen)), utf8_replace_invalid(unseen));
  EXPECT_EQ(tok.encode("<|end_of_text|>"), std::vector<int32_t>{tok.eos_id()});
}

TEST(BpeTrainer, RunningOutOfPairsFillsWithReservedTokens) {
  const BpeTrainingResult result = train({"ab ab"}, 300);
  EXPECT_EQ(result.vocab_size(), 300);
  EXPECT_EQ(result.merges.size(), 2u);  // "ab", " ab"... then nothing left to merge
  EXPECT_EQ(result.reserved_fillers, 300 - 256 - 2 - 2);
  const Tokenizer tok = load_result(result);
  EXPECT_EQ(tok.vocab_size(), 300);
  EXPECT_TRUE(tok.token_id("<|reserved_special_token_0|>").has_value());
}

TEST(BpeTrainer, SpecialTokensInTheTextDoNotShapeMerges) {
  std::string text;
  for (uint32_t i = 0; i < 200; ++i) text += "<|end_of_text|>" + random_text(i, 5);
  const BpeTrainingResult result = train({text}, 256 + 2 + 20);
  ASSERT_EQ(result.merges.size(), 20u);
  for (size_t id = 256; id < result.token_bytes.size(); ++id) {
    EXPECT_EQ(result.token_bytes[id].find_first_of("<|"), std::string::npos) << result.token_bytes[id];
  }
}

TEST(BpeTrainer, TooSmallAVocabIsAnInputError) {
  EXPECT_THROW(BpeTrainer({.vocab_size = 257}), InputError);
  EXPECT_THROW(BpeTrainer({.vocab_size = 0}), InputError);
  BpeTrainer trainer({.vocab_size = 300});
  EXPECT_THROW(trainer.add_file("/nonexistent/corpus.txt"), InputError);
}

// What titan-data's progress is told: bytes per file, checked up front; merges one by one,
// ending at what was made (early when the pairs run out).
TEST(BpeTrainer, ProgressCountsFileBytesThenMerges) {
  const std::string a = testing::write_temp_file("progress_a.txt", random_text(10, 200));
  const std::string b = testing::write_temp_file("progress_b.txt", "ab ab");
  std::vector<std::pair<int64_t, int64_t>> read;
  BpeTrainer trainer({.vocab_size = 300});
  EXPECT_THROW(trainer.add_files({a, "/nonexistent/corpus.txt"},
                                 [&read](int64_t done, int64_t total) { read.emplace_back(done, total); }),
               InputError);
  EXPECT_TRUE(read.empty()) << "no file is read before every path is checked";
  trainer.add_files({a, b}, [&read](int64_t done, int64_t total) { read.emplace_back(done, total); });
  const int64_t total = trainer.bytes();
  EXPECT_EQ(read, (std::vector<std::pair<int64_t, int64_t>>{{total - 5, total}, {total, total}}));

  std::vector<std::pair<int64_t, int64_t>> merged;
  const BpeTrainingResult result =
      trainer.train([&merged](int64_t done, int64_t total) { merged.emplace_back(done, total); });
  ASSERT_EQ(result.merges.size(), 300u - 256 - 2);
  ASSERT_EQ(merged.size(), result.merges.size());
  for (size_t i = 0; i + 1 < merged.size(); ++i) {
    EXPECT_EQ(merged[i], std::make_pair(int64_t(i + 1), int64_t(42)));
  }
  EXPECT_EQ(merged.back(), std::make_pair(int64_t(42), int64_t(42)));

  std::vector<std::pair<int64_t, int64_t>> short_of_pairs;
  BpeTrainer few({.vocab_size = 300});
  few.add_text("ab ab");
  const BpeTrainingResult two =
      few.train([&](int64_t done, int64_t total) { short_of_pairs.emplace_back(done, total); });
  EXPECT_EQ(two.merges.size(), 2u);
  EXPECT_EQ(short_of_pairs, (std::vector<std::pair<int64_t, int64_t>>{{1, 42}, {2, 42}, {2, 2}}));
}

TEST(BpeTrainer, WrittenFolderLoadsWithTheSameIds) {
  const BpeTrainingResult result = train({random_text(8, 1000)}, 320);
  const std::string folder = testing::write_temp_file("unused_trainer", "") + "_dir/sotu-test";
  const std::string path = bpe_write_tokenizer(result, folder);
  const Tokenizer from_folder = Tokenizer::load(folder);
  EXPECT_EQ(from_folder.origin(), path);
  const std::string sample = random_text(9, 50);
  EXPECT_EQ(from_folder.encode(sample), load_result(result).encode(sample));
}

}  // namespace
}  // namespace titan::data

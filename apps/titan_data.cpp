// titan-data: tokenizers and token shards from the command line. Only argument parsing and
// calls live here (docs/architecture.md); the behaviour is in libtitan (data/tokenizer.h,
// data/bpe_trainer.h, data/shards.h) where tests reach it.
//
//   titan-data encode --tokenizer T [--text S]       ids of stdin (or S) on one line
//   titan-data decode --tokenizer T [ID...]          bytes of the ids (args or stdin)
//   titan-data train-tokenizer --vocab-size N --out DIR FILE...
//   titan-data tokenize --tokenizer T --out DIR [--validation-fraction F] [--seed S] FILE...
//   titan-data info --tokenizer T                    one line: format, vocab size, BOS/EOS
//
// Exit codes: 0 success; 2 bad input (arguments, a missing or foreign tokenizer, an id
// outside the vocabulary, an unreadable file), one line "error: ..."; 1 anything else.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <exception>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "titan/app/subcommand.h"
#include "titan/core/error.h"
#include "titan/core/progress.h"
#include "titan/data/bpe_trainer.h"
#include "titan/data/shards.h"
#include "titan/data/tokenizer.h"

namespace {

using titan::data::Tokenizer;

constexpr const char* kHelp =
    "usage: titan-data <command> [options]\n"
    "\n"
    "commands:\n"
    "  encode --tokenizer T [--text S]\n"
    "      Encode stdin byte for byte as one text (or S) and print the token ids on one\n"
    "      line, space-separated (nothing for empty input). No BOS/EOS is added; special\n"
    "      tokens written in the text are matched.\n"
    "  decode --tokenizer T [ID...]\n"
    "      Write the bytes of the ids (from the arguments, or whitespace-separated on stdin).\n"
    "  train-tokenizer --vocab-size N --out DIR FILE...\n"
    "      Train a byte-level BPE on the files (Llama 3's pre-tokenizer) and write\n"
    "      DIR/tokenizer.json. N counts all tokens: 256 bytes, the merges and the special\n"
    "      tokens <|begin_of_text|> and <|end_of_text|>.\n"
    "  tokenize --tokenizer T --out DIR [--validation-fraction F] [--seed S] FILE...\n"
    "      Write token shards and a manifest into DIR (a .jsonl file: one document per\n"
    "      line, its \"text\"; any other file: one document).\n"
    "  info --tokenizer T\n"
    "      One line: the file, its format, vocab size, merges, BOS and EOS ids.\n"
    "\n"
    "T is a tokenizer.json or tokenizer.model file, or a folder holding one\n"
    "(assets/tokenizer/llama3, assets/tokenizer/sotu-2k: tools/fetch_assets.sh).\n"
    "  --help, --version\n";

using Arguments = titan::app::SubcommandArguments;
using titan::app::parse_integer;

Arguments parse(int argc, char** argv, const std::vector<std::string>& known) {
  return titan::app::parse_subcommand(argc, argv, known);
}

double parse_fraction(const std::string& text, const std::string& what) {
  size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TITAN_CHECK_INPUT(used == text.size() && value >= 0 && value < 1)
      << what << ": '" << text << "' is not a fraction in [0, 1)";
  return value;
}

std::string read_stdin() {
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), stdin)) > 0) text.append(buffer, n);
  return text;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int encode(const Arguments& args) {
  TITAN_CHECK_INPUT(args.positional.empty())
      << "encode: unexpected argument '" << args.positional[0] << "' (the text is stdin or --text)";
  const Tokenizer tokenizer = Tokenizer::load(args.required("tokenizer"));
  const std::string text = args.has("text") ? args.options.at("text") : read_stdin();
  const std::vector<int32_t> ids = tokenizer.encode(text);
  if (ids.empty()) return 0;
  std::string line;
  line.reserve(ids.size() * 6);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) line.push_back(' ');
    line += std::to_string(ids[i]);
  }
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stdout);
  return 0;
}

int decode(const Arguments& args) {
  const Tokenizer tokenizer = Tokenizer::load(args.required("tokenizer"));
  std::vector<std::string> words = args.positional;
  if (words.empty()) {
    std::istringstream input(read_stdin());
    words.assign(std::istream_iterator<std::string>(input), std::istream_iterator<std::string>());
  }
  std::vector<int32_t> ids;
  for (const std::string& word : words) {
    const int64_t id = parse_integer(word, "decode");
    TITAN_CHECK_INPUT(id >= 0 && id <= INT32_MAX)
        << "token id " << id << " is not in the tokenizer " << tokenizer.origin();
    ids.push_back(int32_t(id));
  }
  const std::string bytes = tokenizer.decode(ids);
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  return 0;
}

int train_tokenizer(const Arguments& args) {
  titan::data::BpeTrainerOptions options;
  options.vocab_size = parse_integer(args.required("vocab-size"), "--vocab-size");
  const std::string out = args.required("out");
  TITAN_CHECK_INPUT(!args.positional.empty()) << "train-tokenizer: no input files";
  const auto start = std::chrono::steady_clock::now();
  titan::data::BpeTrainer trainer(options);
  trainer.add_files(args.positional, titan::progress_callback("train-tokenizer: counting", "B"));
  const double counted_s = seconds_since(start);
  const titan::data::BpeTrainingResult result =
      trainer.train(titan::progress_callback("train-tokenizer: merging", "merges"));
  const std::string path = titan::data::bpe_write_tokenizer(result, out);
  std::fprintf(stderr,
               "train-tokenizer: %zu files, %.1f MB, %lld pieces (%lld distinct) counted in %.1f s; "
               "%zu merges in %.1f s\n",
               args.positional.size(), double(trainer.bytes()) / 1e6, (long long)trainer.pieces(),
               (long long)trainer.unique_pieces(), counted_s, result.merges.size(),
               seconds_since(start) - counted_s);
  if (result.reserved_fillers > 0) {
    std::fprintf(stderr, "train-tokenizer: the text ran out of pairs; %lld reserved special tokens fill the vocab\n",
                 (long long)result.reserved_fillers);
  }
  // Read back what was written: the file must load and hold exactly the size asked for.
  const Tokenizer tokenizer = Tokenizer::load(path);
  TITAN_CHECK(tokenizer.vocab_size() == options.vocab_size)
      << path << " holds " << tokenizer.vocab_size() << " tokens, not " << options.vocab_size;
  std::printf("%s: %lld tokens (256 bytes, %zu merges, %zu special)\n", path.c_str(),
              (long long)tokenizer.vocab_size(), result.merges.size(), result.special_tokens.size());
  return 0;
}

int tokenize(const Arguments& args) {
  const Tokenizer tokenizer = Tokenizer::load(args.required("tokenizer"));
  titan::data::TokenizeInput input;
  input.encode = [&tokenizer](std::string_view text) { return tokenizer.encode(text); };
  input.bos_id = tokenizer.bos_id();
  input.eos_id = tokenizer.eos_id();
  input.vocab_size = tokenizer.vocab_size();
  input.files = args.positional;
  input.out_dir = args.required("out");
  TITAN_CHECK_INPUT(!input.files.empty()) << "tokenize: no input files";
  if (args.has("validation-fraction")) {
    input.validation_fraction = parse_fraction(args.options.at("validation-fraction"), "--validation-fraction");
  }
  if (args.has("seed")) input.seed = uint64_t(parse_integer(args.options.at("seed"), "--seed"));
  input.tokenizer_description = tokenizer.describe();
  input.progress = titan::progress_callback("tokenize", "B");
  const auto start = std::chrono::steady_clock::now();
  const titan::data::TokenizeReport report = titan::data::tokenize_to_shards(input);
  const double elapsed_s = seconds_since(start);
  std::printf("%s: %lld documents (%lld train, %lld validation), %lld + %lld tokens, %lld shards, "
              "%.1f MB in %.1f s (%.1f MB/s)\n",
              report.manifest_path.c_str(), (long long)report.documents,
              (long long)report.train_documents, (long long)report.validation_documents,
              (long long)report.train_tokens, (long long)report.validation_tokens,
              (long long)report.shards, double(report.input_bytes) / 1e6, elapsed_s,
              double(report.input_bytes) / 1e6 / std::max(elapsed_s, 1e-9));
  return 0;
}

int info(const Arguments& args) {
  TITAN_CHECK_INPUT(args.positional.empty()) << "info: unexpected argument '" << args.positional[0] << "'";
  const Tokenizer tokenizer = Tokenizer::load(args.required("tokenizer"));
  std::printf("%s; vocab_size %lld, bos %d, eos %d\n", tokenizer.describe().c_str(),
              (long long)tokenizer.vocab_size(), tokenizer.bos_id(), tokenizer.eos_id());
  return 0;
}

int run(int argc, char** argv) {
  const std::string command = argv[1];
  if (command == "encode") return encode(parse(argc, argv, {"tokenizer", "text"}));
  if (command == "decode") return decode(parse(argc, argv, {"tokenizer"}));
  if (command == "info") return info(parse(argc, argv, {"tokenizer"}));
  if (command == "train-tokenizer") return train_tokenizer(parse(argc, argv, {"vocab-size", "out"}));
  if (command == "tokenize") {
    return tokenize(parse(argc, argv, {"tokenizer", "out", "validation-fraction", "seed"}));
  }
  TITAN_FAIL_INPUT() << "unknown command '" << command
                     << "'; commands: encode, decode, train-tokenizer, tokenize, info (see --help)";
  return 2;
}

}  // namespace

int main(int argc, char** argv) { return titan::app::run_subcommand_tool(argc, argv, kHelp, run); }

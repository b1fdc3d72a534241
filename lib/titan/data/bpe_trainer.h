// Training a byte-level BPE tokenizer (what `titan-data train-tokenizer` runs).
//
//   BpeTrainer trainer({.vocab_size = 2048});
//   trainer.add_file("assets/text/sotu/1790_george_washington_n.txt");   // or add_text(...)
//   BpeTrainingResult result = trainer.train();   // train(progress_callback("merging", "merges"))
//   bpe_write_tokenizer(result, "assets/tokenizer/sotu-2k");   // tokenizer.json
//   Tokenizer tokenizer = Tokenizer::load("assets/tokenizer/sotu-2k");
//
// The vocabulary counts everything: 256 byte tokens (ids 0..255, in GPT-2's
// byte-to-unicode order, as Llama 3 numbers them), then one token per merge, then the
// special tokens (<|begin_of_text|> and <|end_of_text|> first). vocab_size = 2048 gives
// exactly 2,048 tokens: if the text runs out of pairs to merge first, the rest are
// filled with <|reserved_special_token_N|> tokens, as Llama 3 pads its own.
//
// Training, as HF's BpeTrainer and tiktoken's educational trainer do it:
//   1. Each text is repaired to valid UTF-8 (WHATWG, as encode does), cut at special
//      tokens written in it, and pre-tokenized with the same regex the tokenizer will run
//      (Llama 3's); identical pieces are counted once with their number of occurrences.
//   2. Repeat: merge the adjacent pair with the highest count over all pieces; ties go to
//      the pair whose bytes (left token's, then right token's) sort first. Merging
//      rewrites only the pieces that hold the pair, and updates the counts of the pairs
//      it creates and destroys (a max-heap with lazy deletion finds the next best), so a
//      merge costs what it touches, not the corpus.
// The result depends only on the multiset of pieces: deterministic, whatever the file
// order or hash layout. The written tokenizer.json has ignore_merges false, so encoding
// the training text reproduces the training merges exactly.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "titan/core/progress.h"
#include "titan/data/pretokenizer.h"
#include "titan/data/tokenizer.h"

namespace titan::data {

struct BpeTrainerOptions {
  int64_t vocab_size = 0;  // all tokens: 256 bytes + merges + special tokens
  std::vector<std::string> special_tokens = {std::string(kBeginOfText), std::string(kEndOfText)};
  std::string pattern = std::string(kLlama3Pattern);  // the pre-tokenizer regex
};

struct BpeTrainingResult {
  // By id: 256 single bytes, then the merged tokens in merge order.
  std::vector<std::string> token_bytes;
  // merges[k] = (left id, right id), which makes token 256 + k.
  std::vector<std::pair<int32_t, int32_t>> merges;
  // Ids token_bytes.size() + i, in order; reserved fillers included.
  std::vector<std::string> special_tokens;
  std::string pattern;
  int64_t reserved_fillers = 0;  // special tokens added because the pairs ran out
  int64_t vocab_size() const {
    return int64_t(token_bytes.size()) + int64_t(special_tokens.size());
  }
};

class BpeTrainer {
 public:
  // An InputError when vocab_size cannot hold the 256 bytes and the special tokens.
  explicit BpeTrainer(BpeTrainerOptions options);

  void add_text(std::string_view text);
  void add_file(const std::string& path);  // the file's bytes as one text; InputError if unreadable
  // add_file for each path, telling `progress` (bytes read, all the files' bytes) after each;
  // every path is checked before the first is read.
  void add_files(const std::vector<std::string>& paths, const ProgressCallback& progress = {});

  int64_t bytes() const { return bytes_; }
  int64_t pieces() const { return pieces_; }
  int64_t unique_pieces() const { return int64_t(piece_counts_.size()); }

  // `progress` is told (merges made, merges wanted) after each merge and (made, made) at the
  // end, which is early when the text runs out of pairs.
  BpeTrainingResult train(const ProgressCallback& progress = {}) const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };
  BpeTrainerOptions options_;
  PreTokenizer pre_tokenizer_;
  std::unordered_map<std::string, int64_t, Hash, std::equal_to<>> piece_counts_;
  std::vector<TextPiece> scratch_;
  int64_t bytes_ = 0;
  int64_t pieces_ = 0;
};

// The tokenizer.json text for a trained model (Llama 3's layout: Split + ByteLevel
// pre-tokenizer, ByteLevel decoder, added tokens marked special).
std::string bpe_tokenizer_json(const BpeTrainingResult& result);
// Writes <folder>/tokenizer.json (the folder is created); returns the file's path.
std::string bpe_write_tokenizer(const BpeTrainingResult& result, const std::string& folder);

}  // namespace titan::data

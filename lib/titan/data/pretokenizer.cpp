#include "titan/data/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <utility>

#include "titan/core/error.h"

namespace titan::data {
namespace {

// ECMAScript's WhiteSpace + LineTerminator: what `\s` matches in a JavaScript regex.
constexpr std::string_view kJsSpaceBody =
    R"(\t\n\x{0B}\f\r\x{20}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF})";
constexpr std::string_view kJsDigitBody = "0-9";
constexpr std::string_view kJsWordBody = "A-Za-z0-9_";

// transformers.js rewrites these before compiling (its `createPattern`), because a
// JavaScript regex has no inline (?i:...) group.
const std::pair<std::string_view, std::string_view> kTransformersJsRewrites[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))"},
    {" ?[^(\\s|[.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81\xE0\xA5\xA4\xDB\x94\xD8\x8C])]+",
     " ?[^\\s.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81\xE0\xA5\xA4\xDB\x94\xD8\x8C]+"},
};

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int length = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return length < 0 ? "PCRE2 error " + std::to_string(code)
                    : std::string(reinterpret_cast<const char*>(buffer), size_t(length));
}

// Per-thread match state: match data for the whole-match offsets and a JIT stack large
// enough for long runs of one character class (the default 32 KiB is not).
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_context* context = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    TITAN_CHECK(data != nullptr && context != nullptr && jit_stack != nullptr)
        << "PCRE2: out of memory creating match data";
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_data_free(data);
  }
};

MatchScratch& match_scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

}  // namespace

struct PreTokenizer::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

std::string pretokenizer_translate_pattern(std::string_view pattern) {
  // transformers.js unescapes \# \& \~ first (a `u` regex refuses those escapes).
  std::string text;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size() &&
        (pattern[i + 1] == '#' || pattern[i + 1] == '&' || pattern[i + 1] == '~')) {
      continue;
    }
    text.push_back(pattern[i]);
  }
  for (const auto& [from, to] : kTransformersJsRewrites) text = replace_all(text, from, to);

  // Class escapes with JavaScript meaning; inside [...] the class body is spliced in.
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      const char e = text[i + 1];
      std::string_view body;
      bool negated = false;
      switch (e) {
        case 's': body = kJsSpaceBody; break;
        case 'S': body = kJsSpaceBody; negated = true; break;
        case 'd': body = kJsDigitBody; break;
        case 'D': body = kJsDigitBody; negated = true; break;
        case 'w': body = kJsWordBody; break;
        case 'W': body = kJsWordBody; negated = true; break;
        default: break;
      }
      if (!body.empty() && !(in_class && negated)) {
        if (in_class) {
          out.append(body);
        } else {
          out.append(negated ? "[^" : "[").append(body).append("]");
        }
      } else {
        // Any other escape, or a negated class escape inside a class (no way to splice a
        // complement), is PCRE2's own.
        out.push_back(c);
        out.push_back(e);
      }
      ++i;
      continue;
    }
    out.push_back(c);
    if (!in_class && c == '[') {
      in_class = true;
      if (i + 1 < text.size() && text[i + 1] == '^') out.push_back(text[++i]);
      if (i + 1 < text.size() && text[i + 1] == ']') out.push_back(text[++i]);  // literal ]
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

PreTokenizer::PreTokenizer(std::string_view pattern)
    : pattern_(pattern), compiled_pattern_(pretokenizer_translate_pattern(pattern)),
      code_(std::make_unique<Code>()) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled_pattern_.data()),
                              compiled_pattern_.size(), PCRE2_UTF | PCRE2_UCP, &error_code,
                              &error_offset, nullptr);
  TITAN_CHECK_INPUT(code_->code != nullptr)
      << "pre-tokenizer pattern does not compile at offset " << error_offset << ": "
      << pcre2_message(error_code) << " (pattern " << pattern_ << ")";
  // Without JIT (a PCRE2 built without it) the interpreter gives the same pieces, slower.
  jit_ = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE) == 0;
}

PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::pieces(std::string_view text, std::vector<TextPiece>& out) const {
  TITAN_CHECK(text.size() <= UINT32_MAX) << "pre-tokenizer: text of " << text.size()
                                         << " bytes; pieces hold 32-bit offsets";
  MatchScratch& scratch = match_scratch();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t size = text.size();
  size_t offset = 0;  // where the next match attempt starts
  size_t covered = 0;  // end of the last piece emitted
  while (offset < size) {
    const int rc = jit_ ? pcre2_jit_match(code_->code, subject, size, offset, 0, scratch.data,
                                          scratch.context)
                        : pcre2_match(code_->code, subject, size, offset, PCRE2_NO_UTF_CHECK,
                                      scratch.data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    // rc == 0: a match whose captures did not fit the one-pair ovector; the whole-match
    // offsets are there all the same.
    TITAN_CHECK(rc >= 0) << "pre-tokenizer: PCRE2 match failed: " << pcre2_message(rc);
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
    const size_t begin = ovector[0], end = ovector[1];
    if (begin > covered) out.push_back({uint32_t(covered), uint32_t(begin)});
    if (end > begin) {
      out.push_back({uint32_t(begin), uint32_t(end)});
      offset = covered = end;
    } else {
      // An empty match emits nothing; step over one code point, as a `u` regex does.
      offset = begin + 1;
      while (offset < size && (uint8_t(text[offset]) & 0xC0) == 0x80) ++offset;
      covered = begin;
    }
  }
  if (covered < size) out.push_back({uint32_t(covered), uint32_t(size)});
}

}  // namespace titan::data

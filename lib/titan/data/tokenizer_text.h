// Text helpers the tokenizer and the BPE trainer share: UTF-8 checking and repair, and
// the GPT-2 byte-to-unicode alphabet that HF `tokenizer.json` files spell tokens in.
//
//   std::string repaired;
//   std::string_view text = utf8_repaired(input, repaired);   // valid UTF-8, always
//   std::string spelled = byte_level_spell("\n hi");          // "ĊĠhi"
//   std::optional<std::string> bytes = byte_level_unspell("ĊĠhi");   // "\n hi"
//
// UTF-8 repair follows the WHATWG Encoding Standard's decoder (what TextDecoder in a
// browser or in node does): each maximal invalid subsequence becomes one U+FFFD, so the
// tokenizer and its JavaScript reference see the same text for any bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace titan::data {

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool utf8_is_valid(std::string_view text);

// `text` when it is valid UTF-8; otherwise `storage` receives the WHATWG-decoded text
// (each maximal invalid subsequence replaced by U+FFFD, EF BF BD) and a view of it is
// returned.
std::string_view utf8_repaired(std::string_view text, std::string& storage);
std::string utf8_replace_invalid(std::string_view text);  // always a copy

// Appends the UTF-8 encoding of `code_point` (assumed valid) to `out`.
void utf8_append(std::string& out, uint32_t code_point);

// GPT-2's byte-to-unicode alphabet: byte b is spelled as one printable code point
// ('!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves; the other 68 bytes are U+0100...).
uint32_t byte_level_code_point(uint8_t byte);
std::string byte_level_spell(std::string_view bytes);
// The bytes a byte-level spelled string stands for; nullopt if it holds a code point
// outside the alphabet or is not valid UTF-8.
std::optional<std::string> byte_level_unspell(std::string_view spelled);

}  // namespace titan::data

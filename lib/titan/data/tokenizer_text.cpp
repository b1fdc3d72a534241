#include "titan/data/tokenizer_text.h"

#include <array>
#include <cstring>

namespace titan::data {
namespace {

// The WHATWG UTF-8 decoder's per-lead-byte state: how many continuation bytes follow and
// the range the first of them must fall in (which excludes overlongs, surrogates and
// code points above U+10FFFF). needed == -1: the byte cannot start a sequence.
struct LeadByte {
  int8_t needed;
  uint8_t lower;
  uint8_t upper;
};

constexpr LeadByte lead_byte(uint8_t b) {
  if (b < 0x80) return {0, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {1, 0x80, 0xBF};
  if (b == 0xE0) return {2, 0xA0, 0xBF};
  if (b == 0xED) return {2, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {2, 0x80, 0xBF};
  if (b == 0xF0) return {3, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {3, 0x80, 0xBF};
  if (b == 0xF4) return {3, 0x80, 0x8F};
  return {-1, 0, 0};
}

constexpr std::array<LeadByte, 256> kLeadBytes = [] {
  std::array<LeadByte, 256> table{};
  for (int b = 0; b < 256; ++b) table[size_t(b)] = lead_byte(uint8_t(b));
  return table;
}();

// Length of the well-formed sequence starting at text[i], or 0 if there is none. When 0,
// *consumed is the length of the maximal invalid subsequence (at least 1), which the
// WHATWG decoder replaces with one U+FFFD.
size_t sequence_length(const uint8_t* text, size_t size, size_t i, size_t* consumed) {
  const LeadByte lead = kLeadBytes[text[i]];
  if (lead.needed < 0) {
    *consumed = 1;
    return 0;
  }
  size_t k = 1;
  for (int seen = 0; seen < lead.needed; ++seen, ++k) {
    const uint8_t lower = seen == 0 ? lead.lower : 0x80;
    const uint8_t upper = seen == 0 ? lead.upper : 0xBF;
    if (i + k >= size || text[i + k] < lower || text[i + k] > upper) {
      *consumed = k;  // the bytes so far; the offending byte is decoded afresh
      return 0;
    }
  }
  return k;
}

// The 188 bytes GPT-2 spells as themselves; the rest map to U+0100 + their order.
constexpr bool byte_spells_itself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

constexpr std::array<uint16_t, 256> kByteCodePoints = [] {
  std::array<uint16_t, 256> table{};
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    table[size_t(b)] = byte_spells_itself(b) ? uint16_t(b) : uint16_t(256 + next++);
  }
  return table;
}();

// Inverse of kByteCodePoints over U+0000..U+0143; -1 where no byte maps.
constexpr std::array<int16_t, 324> kCodePointBytes = [] {
  std::array<int16_t, 324> table{};
  for (int16_t& entry : table) entry = -1;
  for (int b = 0; b < 256; ++b) table[kByteCodePoints[size_t(b)]] = int16_t(b);
  return table;
}();

}  // namespace

bool utf8_is_valid(std::string_view text) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const size_t size = text.size();
  size_t i = 0;
  while (i < size) {
    // Eight ASCII bytes at a time: most text is mostly ASCII.
    if (i + 8 <= size) {
      uint64_t word;
      std::memcpy(&word, bytes + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    if (bytes[i] < 0x80) {
      ++i;
      continue;
    }
    size_t consumed = 0;
    const size_t length = sequence_length(bytes, size, i, &consumed);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_replace_invalid(std::string_view text) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const size_t size = text.size();
  std::string out;
  out.reserve(size + size / 8);
  size_t i = 0;
  while (i < size) {
    if (bytes[i] < 0x80) {
      out.push_back(char(bytes[i++]));
      continue;
    }
    size_t consumed = 0;
    const size_t length = sequence_length(bytes, size, i, &consumed);
    if (length > 0) {
      out.append(text.data() + i, length);
      i += length;
    } else {
      out.append("\xEF\xBF\xBD");
      i += consumed;
    }
  }
  return out;
}

std::string_view utf8_repaired(std::string_view text, std::string& storage) {
  if (utf8_is_valid(text)) return text;
  storage = utf8_replace_invalid(text);
  return storage;
}

uint32_t byte_level_code_point(uint8_t byte) { return kByteCodePoints[byte]; }

std::string byte_level_spell(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8_append(out, kByteCodePoints[uint8_t(c)]);
  return out;
}

std::optional<std::string> byte_level_unspell(std::string_view spelled) {
  if (!utf8_is_valid(spelled)) return std::nullopt;
  const auto* bytes = reinterpret_cast<const uint8_t*>(spelled.data());
  std::string out;
  out.reserve(spelled.size());
  for (size_t i = 0; i < spelled.size();) {
    uint32_t cp = bytes[i];
    if (cp < 0x80) {
      i += 1;
    } else if ((cp & 0xE0) == 0xC0 && i + 1 < spelled.size()) {
      cp = ((cp & 0x1F) << 6) | (bytes[i + 1] & 0x3F);
      i += 2;
    } else {
      return std::nullopt;  // three- and four-byte code points are all outside the alphabet
    }
    if (cp >= kCodePointBytes.size() || kCodePointBytes[cp] < 0) return std::nullopt;
    out.push_back(char(kCodePointBytes[cp]));
  }
  return out;
}

}  // namespace titan::data

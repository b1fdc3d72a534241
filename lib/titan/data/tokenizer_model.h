// What a loaded tokenizer holds: the tables encode and decode read. Built by the parsers
// (tokenizer_load.cpp) from tokenizer.json or tiktoken text, then immutable. Internal to
// lib/titan/data and its tests; users hold a Tokenizer (tokenizer.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "titan/data/pretokenizer.h"
#include "titan/data/tokenizer.h"
#include "titan/data/tokenizer_tables.h"

namespace titan::data {

inline uint64_t bpe_pair_key(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
};

enum class TokenKind : uint8_t { None, Regular, Added };

struct TokenizerModel {
  std::string origin;
  TokenizerFormat format = TokenizerFormat::HfJson;

  // By id: the token's bytes (an added token's content) and what kind of token it is.
  std::vector<std::string> token_bytes;
  std::vector<TokenKind> token_kinds;
  TokenTable regular_ids;  // regular (model vocab) tokens by their bytes
  std::array<int32_t, 256> byte_ids{};  // the token of each single byte

  MergeTable merges;
  bool ignore_merges = false;

  std::vector<AddedToken> added_tokens;
  // A byte trie over the added tokens' contents for leftmost-longest matching:
  // trie_edges maps (node << 8 | byte) to the child node; trie_token[node] is the index in
  // added_tokens of the token ending there, or -1. Node 0 is the root.
  std::unordered_map<uint64_t, int32_t> trie_edges;
  std::vector<int32_t> trie_token;
  std::array<bool, 256> trie_first_byte{};

  std::unique_ptr<PreTokenizer> pre_tokenizer;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  uint64_t serial = 0;  // tells thread-local piece caches apart

  int64_t merge_count() const { return int64_t(merges.size()); }
};

// Parsers: `origin` names the source in errors (InputError for anything malformed).
std::shared_ptr<TokenizerModel> tokenizer_model_from_hf_json(std::string_view text,
                                                             const std::string& origin);
std::shared_ptr<TokenizerModel> tokenizer_model_from_tiktoken(std::string_view text,
                                                              const std::string& origin);

// Llama 3.1's 256 special tokens, in id order after the last regular token (what
// meta-llama's tokenizer.py adds to a tiktoken file).
std::vector<std::string> llama3_special_tokens();

}  // namespace titan::data

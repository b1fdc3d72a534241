// Encoding and decoding (the tables come from tokenizer_load.cpp).
//
// The hot path, per pre-token piece: a one-byte piece is its byte's token; otherwise the
// thread's piece cache (piece bytes -> ids) answers most pieces of real text; a miss runs
// BPE on the piece and fills the cache. BPE on a short piece rescans an array of
// adjacent-pair ranks (tiktoken's method, fastest for the few bytes of a word); a long
// piece (a run of 10,000 spaces, a minified line) uses a heap of pairs and a linked list,
// O(n log n), as transformers.js does.
#include "titan/data/tokenizer.h"

#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <queue>
#include <sstream>

#include "titan/core/error.h"
#include "titan/data/tokenizer_model.h"
#include "titan/data/tokenizer_text.h"

namespace titan::data {
namespace {

namespace fs = std::filesystem;

constexpr size_t kShortPiece = 128;       // longest piece for the rescanning BPE
constexpr size_t kCachedPieceBytes = 64;  // longer pieces are rare and not cached
constexpr size_t kCacheMaxPieces = size_t(1) << 18;

// A piece's bytes -> its ids, for the pieces this thread has encoded. Open addressing
// with linear probing over a power-of-two table; keys and ids live in two flat arenas,
// so a lookup touches one slot and one short key and allocates nothing.
class PieceCache {
 public:
  void clear() {
    slots_.assign(kInitialSlots, Slot{});
    keys_.clear();
    ids_.clear();
    size_ = 0;
  }
  size_t size() const { return size_; }

  // The cached ids of `piece`, or false.
  bool find(std::string_view piece, uint64_t hash, std::vector<int32_t>& out) const {
    if (slots_.empty()) return false;
    for (size_t i = hash & (slots_.size() - 1);; i = (i + 1) & (slots_.size() - 1)) {
      const Slot& slot = slots_[i];
      if (slot.id_count == 0) return false;  // empty slot: every cached piece has ids
      if (slot.hash == hash && slot.key_bytes == piece.size() &&
          std::memcmp(keys_.data() + slot.key_offset, piece.data(), piece.size()) == 0) {
        out.insert(out.end(), ids_.data() + slot.ids_offset, ids_.data() + slot.ids_offset + slot.id_count);
        return true;
      }
    }
  }

  void insert(std::string_view piece, uint64_t hash, const int32_t* ids, size_t count) {
    if (slots_.empty()) clear();
    if ((size_ + 1) * 2 > slots_.size()) grow();
    place(Slot{hash, uint32_t(keys_.size()), uint32_t(ids_.size()), uint16_t(piece.size()), uint16_t(count)});
    keys_.append(piece);
    ids_.insert(ids_.end(), ids, ids + count);
    ++size_;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0;
    uint32_t ids_offset = 0;
    uint16_t key_bytes = 0;
    uint16_t id_count = 0;  // 0: empty
  };
  static constexpr size_t kInitialSlots = 1 << 12;

  void place(const Slot& slot) {
    size_t i = slot.hash & (slots_.size() - 1);
    while (slots_[i].id_count != 0) i = (i + 1) & (slots_.size() - 1);
    slots_[i] = slot;
  }
  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    for (const Slot& slot : old) {
      if (slot.id_count != 0) place(slot);
    }
  }

  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t size_ = 0;
};

// Per-thread state: the piece cache of one tokenizer (the last one this thread used) and
// scratch buffers, so encode allocates nothing once warm.
struct EncodeScratch {
  uint64_t serial = 0;
  PieceCache cache;
  std::vector<TextPiece> pieces;
  std::vector<int32_t> symbols;
  std::vector<int32_t> pair_ranks;
  std::vector<int32_t> pair_ids;
  std::string repaired;

  void use(const TokenizerModel& model) {
    if (serial == model.serial && cache.size() < kCacheMaxPieces) return;
    serial = model.serial;
    cache.clear();
  }
};

EncodeScratch& encode_scratch() {
  thread_local EncodeScratch scratch;
  return scratch;
}

BpeMerge find_merge(const TokenizerModel& model, int32_t left, int32_t right) {
  return model.merges.find(left, right);
}

// BPE over `piece` (2..kShortPiece bytes): rescan the pair ranks for the lowest, merge it,
// update its two neighbours.
void bpe_short(const TokenizerModel& model, std::string_view piece, EncodeScratch& s,
               std::vector<int32_t>& out) {
  std::vector<int32_t>& sym = s.symbols;
  std::vector<int32_t>& rank = s.pair_ranks;  // rank[i]: merge of (sym[i], sym[i + 1])
  std::vector<int32_t>& merged = s.pair_ids;
  sym.clear();
  for (char c : piece) sym.push_back(model.byte_ids[uint8_t(c)]);
  rank.resize(sym.size() - 1);
  merged.resize(sym.size() - 1);
  for (size_t i = 0; i + 1 < sym.size(); ++i) {
    const BpeMerge m = find_merge(model, sym[i], sym[i + 1]);
    rank[i] = m.rank;
    merged[i] = m.id;
  }
  while (!rank.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < rank.size(); ++i) {
      if (rank[i] < rank[best]) best = i;  // strict: the leftmost of equal ranks
    }
    if (rank[best] == INT_MAX) break;
    sym[best] = merged[best];
    sym.erase(sym.begin() + std::ptrdiff_t(best) + 1);
    rank.erase(rank.begin() + std::ptrdiff_t(best));
    merged.erase(merged.begin() + std::ptrdiff_t(best));
    if (best > 0) {
      const BpeMerge m = find_merge(model, sym[best - 1], sym[best]);
      rank[best - 1] = m.rank;
      merged[best - 1] = m.id;
    }
    if (best < rank.size()) {
      const BpeMerge m = find_merge(model, sym[best], sym[best + 1]);
      rank[best] = m.rank;
      merged[best] = m.id;
    }
  }
  out.insert(out.end(), sym.begin(), sym.end());
}

// BPE over a long piece: a min-heap of candidate pairs keyed by (rank, position); stale
// entries (a side merged since) are skipped when popped.
void bpe_long(const TokenizerModel& model, std::string_view piece, std::vector<int32_t>& out) {
  const int32_t n = int32_t(piece.size());
  std::vector<int32_t> id(piece.size()), next(piece.size()), prev(piece.size());
  for (int32_t i = 0; i < n; ++i) {
    id[size_t(i)] = model.byte_ids[uint8_t(piece[size_t(i)])];
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
    prev[size_t(i)] = i - 1;
  }
  struct Candidate {
    int32_t rank, left, right, left_id, right_id, merged;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto push = [&](int32_t left) {
    if (left < 0 || next[size_t(left)] < 0) return;
    const int32_t right = next[size_t(left)];
    const BpeMerge m = find_merge(model, id[size_t(left)], id[size_t(right)]);
    if (m.id >= 0) heap.push({m.rank, left, right, id[size_t(left)], id[size_t(right)], m.id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (id[size_t(c.left)] != c.left_id || next[size_t(c.left)] != c.right ||
        id[size_t(c.right)] != c.right_id) {
      continue;  // stale
    }
    id[size_t(c.left)] = c.merged;
    id[size_t(c.right)] = -1;
    next[size_t(c.left)] = next[size_t(c.right)];
    if (next[size_t(c.left)] >= 0) prev[size_t(next[size_t(c.left)])] = c.left;
    push(prev[size_t(c.left)]);
    push(c.left);
  }
  for (int32_t i = 0; i >= 0; i = next[size_t(i)]) out.push_back(id[size_t(i)]);
}

void encode_piece(const TokenizerModel& model, std::string_view piece, EncodeScratch& s,
                  std::vector<int32_t>& out) {
  if (piece.size() == 1) {
    out.push_back(model.byte_ids[uint8_t(piece[0])]);
    return;
  }
  const bool cacheable = piece.size() <= kCachedPieceBytes;
  const uint64_t hash = cacheable ? bytes_hash(piece) : 0;
  if (cacheable && s.cache.find(piece, hash, out)) return;
  const size_t start = out.size();
  const std::optional<int32_t> whole = model.ignore_merges ? model.regular_ids.find(piece) : std::nullopt;
  if (whole) {
    out.push_back(*whole);
  } else if (piece.size() <= kShortPiece) {
    bpe_short(model, piece, s, out);
  } else {
    bpe_long(model, piece, out);
  }
  if (cacheable) s.cache.insert(piece, hash, out.data() + start, out.size() - start);
}

// Text between added tokens: pre-tokenize, then BPE each piece.
void encode_ordinary(const TokenizerModel& model, std::string_view text, EncodeScratch& s,
                     std::vector<int32_t>& out) {
  if (text.empty()) return;
  s.pieces.clear();
  model.pre_tokenizer->pieces(text, s.pieces);
  for (const TextPiece& piece : s.pieces) {
    encode_piece(model, text.substr(piece.begin, piece.end - piece.begin), s, out);
  }
}

// The leftmost-longest added token at or after `from`: its start, end and id, or
// start == text.size() if none.
struct AddedMatch {
  size_t begin, end;
  int32_t id;
};

AddedMatch find_added(const TokenizerModel& model, std::string_view text, size_t from) {
  for (size_t i = from; i < text.size(); ++i) {
    if (!model.trie_first_byte[uint8_t(text[i])]) continue;
    int32_t node = 0, found = -1;
    size_t found_end = i;
    for (size_t k = i; k < text.size(); ++k) {
      const auto edge = model.trie_edges.find((uint64_t(node) << 8) | uint8_t(text[k]));
      if (edge == model.trie_edges.end()) break;
      node = edge->second;
      if (model.trie_token[size_t(node)] >= 0) {
        found = model.trie_token[size_t(node)];
        found_end = k + 1;
      }
    }
    if (found >= 0) return {i, found_end, model.added_tokens[size_t(found)].id};
  }
  return {text.size(), text.size(), -1};
}

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  TITAN_CHECK_INPUT(file.good()) << "tokenizer " << path << ": cannot read the file";
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& file_or_folder) {
  std::error_code ec;
  std::string path = file_or_folder;
  if (fs::is_directory(path, ec)) {
    const fs::path folder(path);
    if (fs::is_regular_file(folder / "tokenizer.json", ec)) {
      path = (folder / "tokenizer.json").string();
    } else if (fs::is_regular_file(folder / "tokenizer.model", ec)) {
      path = (folder / "tokenizer.model").string();
    } else {
      TITAN_FAIL_INPUT() << "tokenizer folder " << file_or_folder
                         << " holds neither tokenizer.json nor tokenizer.model"
                         << " (the Llama 3 and sotu-2k tokenizers come from tools/fetch_assets.sh)";
    }
  } else if (!fs::exists(path, ec)) {
    TITAN_FAIL_INPUT() << "tokenizer " << file_or_folder << ": no such file or folder"
                       << " (the Llama 3 and sotu-2k tokenizers come from tools/fetch_assets.sh)";
  }
  const std::string text = read_file(path);
  const size_t first = text.find_first_not_of(" \t\r\n");
  const TokenizerFormat format = first != std::string::npos && text[first] == '{'
                                     ? TokenizerFormat::HfJson
                                     : TokenizerFormat::Tiktoken;
  return from_text(text, format, path);
}

Tokenizer Tokenizer::from_text(std::string_view text, TokenizerFormat format,
                               const std::string& origin) {
  switch (format) {
    case TokenizerFormat::HfJson: return Tokenizer(tokenizer_model_from_hf_json(text, origin));
    case TokenizerFormat::Tiktoken: return Tokenizer(tokenizer_model_from_tiktoken(text, origin));
  }
  TITAN_FAIL() << "unknown tokenizer format";
  return Tokenizer(nullptr);
}

void Tokenizer::encode_append(std::string_view input, std::vector<int32_t>& ids,
                              Framing framing) const {
  const TokenizerModel& model = *model_;
  EncodeScratch& s = encode_scratch();
  s.use(model);
  std::string_view text = utf8_repaired(input, s.repaired);
  if (framing != Framing::None) ids.push_back(model.bos_id);
  size_t at = 0;
  while (at < text.size()) {
    const AddedMatch added =
        model.added_tokens.empty() ? AddedMatch{text.size(), text.size(), -1} : find_added(model, text, at);
    encode_ordinary(model, text.substr(at, added.begin - at), s, ids);
    if (added.id >= 0) ids.push_back(added.id);
    at = added.end;
  }
  if (framing == Framing::BosEos) ids.push_back(model.eos_id);
  if (s.repaired.capacity() > (size_t(1) << 24)) std::string().swap(s.repaired);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, Framing framing) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  encode_append(text, ids, framing);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (const int32_t id : ids) {
    TITAN_CHECK_INPUT(id >= 0 && id < vocab_size() &&
                      model_->token_kinds[size_t(id)] != TokenKind::None)
        << "token id " << id << " is not in the tokenizer " << model_->origin << " (vocab size "
        << vocab_size() << ")";
    out.append(model_->token_bytes[size_t(id)]);
  }
  return out;
}

int64_t Tokenizer::vocab_size() const { return int64_t(model_->token_bytes.size()); }
int32_t Tokenizer::bos_id() const { return model_->bos_id; }
int32_t Tokenizer::eos_id() const { return model_->eos_id; }

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  for (const AddedToken& added : model_->added_tokens) {
    if (added.content == token) return added.id;
  }
  return model_->regular_ids.find(token);
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return model_->token_bytes[size_t(id)];
}

bool Tokenizer::is_added_token(int32_t id) const {
  return id >= 0 && id < vocab_size() && model_->token_kinds[size_t(id)] == TokenKind::Added;
}

TokenizerFormat Tokenizer::format() const { return model_->format; }
const std::string& Tokenizer::origin() const { return model_->origin; }

std::string Tokenizer::describe() const {
  std::ostringstream text;
  text << model_->origin << " ("
       << (model_->format == TokenizerFormat::HfJson ? "tokenizer.json" : "tiktoken")
       << " byte-level BPE, " << vocab_size() << " tokens, " << model_->merge_count()
       << " merges, " << model_->added_tokens.size() << " added)";
  return text.str();
}

}  // namespace titan::data

#include "titan/data/bpe_trainer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "titan/core/error.h"
#include "titan/data/tokenizer_model.h"
#include "titan/data/tokenizer_text.h"

namespace titan::data {
namespace {

// The 256 bytes in the order GPT-2 (and Llama 3) number them: by their code point in the
// byte-to-unicode alphabet.
std::vector<uint8_t> bytes_in_id_order() {
  std::vector<uint8_t> order(256);
  for (int b = 0; b < 256; ++b) order[size_t(b)] = uint8_t(b);
  std::sort(order.begin(), order.end(), [](uint8_t a, uint8_t b) {
    return byte_level_code_point(a) < byte_level_code_point(b);
  });
  return order;
}

// One distinct piece of the corpus: its current symbols and how often it occurs.
struct Word {
  std::vector<int32_t> symbols;
  int64_t count = 0;
  int64_t last_merge = -1;  // the merge that last rewrote it (each is rewritten once)
};

struct PairCandidate {
  int64_t count;
  int32_t left, right;
};

}  // namespace

BpeTrainer::BpeTrainer(BpeTrainerOptions options)
    : options_(std::move(options)), pre_tokenizer_(options_.pattern) {
  const int64_t minimum = 256 + int64_t(options_.special_tokens.size());
  TITAN_CHECK_INPUT(options_.vocab_size >= minimum)
      << "--vocab-size " << options_.vocab_size << " is too small: it counts the 256 byte tokens and "
      << options_.special_tokens.size() << " special tokens, so it must be at least " << minimum;
  TITAN_CHECK_INPUT(options_.vocab_size <= (int64_t(1) << 24))
      << "--vocab-size " << options_.vocab_size << " is too large (at most 16,777,216)";
  for (const std::string& special : options_.special_tokens) {
    TITAN_CHECK_INPUT(!special.empty() && utf8_is_valid(special))
        << "special token " << special << " must be non-empty valid UTF-8";
  }
}

void BpeTrainer::add_text(std::string_view input) {
  std::string repaired_storage;
  const std::string_view text = utf8_repaired(input, repaired_storage);
  bytes_ += int64_t(input.size());
  // Cut at special tokens written in the text: encode matches them whole, so their
  // bytes must not shape the merges.
  // next_found[k]: where special token k next occurs at or after `at` (npos: nowhere).
  std::vector<size_t> next_found;
  for (const std::string& special : options_.special_tokens) next_found.push_back(text.find(special));
  size_t at = 0;
  while (at < text.size()) {
    size_t next = text.size(), skip = 0;
    for (size_t k = 0; k < next_found.size(); ++k) {
      const std::string& special = options_.special_tokens[k];
      if (next_found[k] != std::string_view::npos && next_found[k] < at) next_found[k] = text.find(special, at);
      const size_t found = next_found[k];
      if (found < next || (found == next && special.size() > skip)) {
        next = found;
        skip = special.size();
      }
    }
    const std::string_view segment = text.substr(at, next - at);
    scratch_.clear();
    pre_tokenizer_.pieces(segment, scratch_);
    for (const TextPiece& piece : scratch_) {
      const std::string_view bytes = segment.substr(piece.begin, piece.end - piece.begin);
      auto it = piece_counts_.find(bytes);
      if (it == piece_counts_.end()) it = piece_counts_.emplace(std::string(bytes), 0).first;
      ++it->second;
    }
    pieces_ += int64_t(scratch_.size());
    at = next + skip;
  }
}

void BpeTrainer::add_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  TITAN_CHECK_INPUT(file.good()) << "train-tokenizer: cannot read " << path;
  std::stringstream text;
  text << file.rdbuf();
  add_text(text.str());
}

void BpeTrainer::add_files(const std::vector<std::string>& paths, const ProgressCallback& progress) {
  int64_t total = 0;
  std::vector<int64_t> sizes;
  for (const std::string& path : paths) {
    std::error_code error;
    const uintmax_t bytes = std::filesystem::file_size(path, error);
    TITAN_CHECK_INPUT(!error && std::filesystem::is_regular_file(path))
        << "train-tokenizer: cannot read " << path;
    sizes.push_back(int64_t(bytes));
    total += int64_t(bytes);
  }
  int64_t done = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    add_file(paths[i]);
    done += sizes[i];
    if (progress) progress(done, total);
  }
}

BpeTrainingResult BpeTrainer::train(const ProgressCallback& progress) const {
  BpeTrainingResult result;
  result.pattern = options_.pattern;
  std::vector<int32_t> byte_ids(256);
  for (uint8_t b : bytes_in_id_order()) {
    byte_ids[b] = int32_t(result.token_bytes.size());
    result.token_bytes.emplace_back(1, char(b));
  }
  const int64_t merges_wanted =
      options_.vocab_size - 256 - int64_t(options_.special_tokens.size());

  // Distinct pieces, sorted by bytes so the work (not the result) is deterministic too.
  std::vector<const std::pair<const std::string, int64_t>*> sorted;
  sorted.reserve(piece_counts_.size());
  for (const auto& entry : piece_counts_) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  std::vector<Word> words(sorted.size());
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;  // may repeat a word
  for (size_t w = 0; w < sorted.size(); ++w) {
    Word& word = words[w];
    for (char c : sorted[w]->first) word.symbols.push_back(byte_ids[uint8_t(c)]);
    word.count = sorted[w]->second;
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const uint64_t key = bpe_pair_key(word.symbols[i], word.symbols[i + 1]);
      pair_counts[key] += word.count;
      pair_words[key].push_back(int32_t(w));
    }
  }

  // Max count first; ties to the pair whose bytes sort first.
  const std::vector<std::string>& tokens = result.token_bytes;
  const auto worse = [&tokens](const PairCandidate& a, const PairCandidate& b) {
    if (a.count != b.count) return a.count < b.count;
    const int by_left = tokens[size_t(a.left)].compare(tokens[size_t(b.left)]);
    if (by_left != 0) return by_left > 0;
    return tokens[size_t(a.right)].compare(tokens[size_t(b.right)]) > 0;
  };
  std::priority_queue<PairCandidate, std::vector<PairCandidate>, decltype(worse)> heap(worse);
  for (const auto& [key, count] : pair_counts) {
    heap.push({count, int32_t(key >> 32), int32_t(key & 0xFFFFFFFFu)});
  }

  std::unordered_map<uint64_t, int64_t> delta;
  std::vector<int32_t> rewritten;
  while (int64_t(result.merges.size()) < merges_wanted && !heap.empty()) {
    const PairCandidate best = heap.top();
    heap.pop();
    const uint64_t best_key = bpe_pair_key(best.left, best.right);
    const auto current = pair_counts.find(best_key);
    if (current == pair_counts.end() || current->second != best.count || best.count <= 0) {
      continue;  // stale: the count changed since this entry was pushed
    }
    const int32_t merged = int32_t(result.token_bytes.size());
    const int64_t merge_index = int64_t(result.merges.size());
    result.merges.emplace_back(best.left, best.right);
    if (progress && int64_t(result.merges.size()) < merges_wanted) {
      progress(int64_t(result.merges.size()), merges_wanted);
    }
    result.token_bytes.push_back(tokens[size_t(best.left)] + tokens[size_t(best.right)]);

    // Rewrite each word holding the pair, left to right, and net the pair counts.
    delta.clear();
    const std::vector<int32_t> holders = std::move(pair_words[best_key]);
    pair_words.erase(best_key);
    for (const int32_t w : holders) {
      Word& word = words[size_t(w)];
      if (word.last_merge == merge_index) continue;
      word.last_merge = merge_index;
      const std::vector<int32_t>& old = word.symbols;
      rewritten.clear();
      for (size_t i = 0; i < old.size(); ++i) {
        if (i + 1 < old.size() && old[i] == best.left && old[i + 1] == best.right) {
          rewritten.push_back(merged);
          ++i;
        } else {
          rewritten.push_back(old[i]);
        }
      }
      if (rewritten.size() == old.size()) continue;  // a stale holder: the pair is gone
      for (size_t i = 0; i + 1 < old.size(); ++i) delta[bpe_pair_key(old[i], old[i + 1])] -= word.count;
      for (size_t i = 0; i + 1 < rewritten.size(); ++i) {
        const uint64_t key = bpe_pair_key(rewritten[i], rewritten[i + 1]);
        delta[key] += word.count;
        if (rewritten[i] == merged || rewritten[i + 1] == merged) pair_words[key].push_back(w);
      }
      word.symbols.swap(rewritten);
    }
    for (const auto& [key, change] : delta) {
      if (change == 0) continue;
      int64_t& count = pair_counts[key];
      count += change;
      if (count > 0) {
        heap.push({count, int32_t(key >> 32), int32_t(key & 0xFFFFFFFFu)});
      } else {
        pair_counts.erase(key);
      }
    }
  }

  if (progress) progress(int64_t(result.merges.size()), int64_t(result.merges.size()));

  result.special_tokens = options_.special_tokens;
  // Out of pairs before the size asked for: pad with reserved tokens, as Llama 3 does.
  for (int64_t n = 0; result.vocab_size() < options_.vocab_size; ++n) {
    std::string name = "<|reserved_special_token_" + std::to_string(n) + "|>";
    if (std::find(result.special_tokens.begin(), result.special_tokens.end(), name) !=
        result.special_tokens.end()) {
      continue;
    }
    result.special_tokens.push_back(std::move(name));
    ++result.reserved_fillers;
  }
  return result;
}

std::string bpe_tokenizer_json(const BpeTrainingResult& result) {
  using nlohmann::ordered_json;
  ordered_json vocab = ordered_json::object();
  for (size_t id = 0; id < result.token_bytes.size(); ++id) {
    vocab[byte_level_spell(result.token_bytes[id])] = id;
  }
  ordered_json merges = ordered_json::array();
  for (const auto& [left, right] : result.merges) {
    merges.push_back(ordered_json::array({byte_level_spell(result.token_bytes[size_t(left)]),
                                          byte_level_spell(result.token_bytes[size_t(right)])}));
  }
  ordered_json added = ordered_json::array();
  for (size_t i = 0; i < result.special_tokens.size(); ++i) {
    added.push_back({{"id", result.token_bytes.size() + i},
                     {"content", result.special_tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const ordered_json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                                   {"trim_offsets", true}, {"use_regex", true}};
  ordered_json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         ordered_json::array({{{"type", "Split"},
           {"pattern", {{"Regex", result.pattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}}},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}}};
  return root.dump(1) + "\n";
}

std::string bpe_write_tokenizer(const BpeTrainingResult& result, const std::string& folder) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(folder, ec);
  TITAN_CHECK_INPUT(!ec) << "train-tokenizer: cannot create " << folder << ": " << ec.message();
  const std::string path = (fs::path(folder) / "tokenizer.json").string();
  const std::string temporary = path + ".tmp";
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    file << bpe_tokenizer_json(result);
    file.close();
    TITAN_CHECK_INPUT(file.good()) << "train-tokenizer: cannot write " << temporary;
  }
  fs::rename(temporary, path, ec);
  TITAN_CHECK_INPUT(!ec) << "train-tokenizer: cannot rename " << temporary << " to " << path;
  return path;
}

}  // namespace titan::data

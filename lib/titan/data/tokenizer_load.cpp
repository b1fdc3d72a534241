// Reading tokenizer files into a TokenizerModel: HF tokenizer.json and tiktoken's
// `base64 rank` lines. Everything a file can get wrong is an InputError naming the file.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <nlohmann/json.hpp>

#include "titan/core/error.h"
#include "titan/data/tokenizer_model.h"
#include "titan/data/tokenizer_text.h"

namespace titan::data {
namespace {

using nlohmann::json;

// GPT-2's pre-tokenizer: what a ByteLevel pre-tokenizer with use_regex runs.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string shown(std::string_view text) {
  std::string out = "\"";
  for (char c : text.substr(0, 60)) {
    if (uint8_t(c) < 0x20) {
      out += "\\x" + std::string(1, "0123456789abcdef"[uint8_t(c) >> 4]) +
             std::string(1, "0123456789abcdef"[uint8_t(c) & 15]);
    } else {
      out.push_back(c);
    }
  }
  return out + (text.size() > 60 ? "...\"" : "\"");
}

// Sizes the id tables so that `id` fits and records one token; a second token with the
// same id is a malformed file.
void set_token(TokenizerModel& model, int64_t id, std::string bytes, TokenKind kind) {
  TITAN_CHECK_INPUT(id >= 0 && id < (int64_t(1) << 30))
      << model.origin << ": token id " << id << " is out of range";
  if (size_t(id) >= model.token_bytes.size()) {
    model.token_bytes.resize(size_t(id) + 1);
    model.token_kinds.resize(size_t(id) + 1, TokenKind::None);
  }
  if (kind == TokenKind::Regular) {
    TITAN_CHECK_INPUT(model.token_kinds[size_t(id)] == TokenKind::None)
        << model.origin << ": two tokens have id " << id;
    const bool inserted = model.regular_ids.insert(bytes, int32_t(id));
    TITAN_CHECK_INPUT(inserted) << model.origin << ": two tokens have the bytes "
                                << shown(bytes);
  }
  // An added token may take over a vocab id (HF files repeat them in the vocab): the
  // added token's text is what decode gives.
  model.token_bytes[size_t(id)] = std::move(bytes);
  model.token_kinds[size_t(id)] = kind;
}

void add_added_token(TokenizerModel& model, std::string content, int64_t id, bool special) {
  TITAN_CHECK_INPUT(!content.empty()) << model.origin << ": added token " << id << " is empty";
  TITAN_CHECK_INPUT(utf8_is_valid(content))
      << model.origin << ": added token " << id << " is not valid UTF-8";
  set_token(model, id, content, TokenKind::Added);
  model.added_tokens.push_back({std::move(content), int32_t(id), special});
}

// Checks shared by both formats, then the derived tables: byte ids, BOS/EOS, the trie.
void finish(TokenizerModel& model) {
  for (int b = 0; b < 256; ++b) {
    const char byte = char(b);
    const std::optional<int32_t> id = model.regular_ids.find(std::string_view(&byte, 1));
    TITAN_CHECK_INPUT(id.has_value())
        << model.origin << ": no token for the byte 0x" << std::hex << b
        << "; only byte-level BPE tokenizers (Llama 3, GPT-2 style) are supported";
    model.byte_ids[size_t(b)] = *id;
  }
  model.trie_edges.clear();
  model.trie_token.assign(1, -1);
  model.trie_first_byte.fill(false);
  for (size_t t = 0; t < model.added_tokens.size(); ++t) {
    const std::string& content = model.added_tokens[t].content;
    model.trie_first_byte[uint8_t(content[0])] = true;
    int32_t node = 0;
    for (char c : content) {
      const uint64_t key = (uint64_t(node) << 8) | uint8_t(c);
      auto it = model.trie_edges.find(key);
      if (it == model.trie_edges.end()) {
        it = model.trie_edges.emplace(key, int32_t(model.trie_token.size())).first;
        model.trie_token.push_back(-1);
      }
      node = it->second;
    }
    model.trie_token[size_t(node)] = int32_t(t);
  }
  const auto find_token = [&](std::string_view content) -> int32_t {
    for (const AddedToken& token : model.added_tokens) {
      if (token.content == content) return token.id;
    }
    return model.regular_ids.find(content).value_or(-1);
  };
  model.bos_id = find_token(kBeginOfText);
  model.eos_id = find_token(kEndOfText);
  TITAN_CHECK_INPUT(model.bos_id >= 0 && model.eos_id >= 0)
      << model.origin << ": no " << (model.bos_id < 0 ? kBeginOfText : kEndOfText)
      << " token; titan.cpp frames documents with <|begin_of_text|> and <|end_of_text|>"
         " (train one with `titan-data train-tokenizer` or use the Llama 3 tokenizer)";
  static std::atomic<uint64_t> serials{0};
  model.serial = ++serials;
}

// ---------------------------------------------------------------------------------------
// tokenizer.json

const json& member(const json& object, const char* key, const std::string& where,
                   const std::string& origin) {
  TITAN_CHECK_INPUT(object.is_object() && object.contains(key))
      << origin << ": " << where << " has no \"" << key << "\"";
  return object.at(key);
}

std::string json_string(const json& value, const std::string& what, const std::string& origin) {
  TITAN_CHECK_INPUT(value.is_string()) << origin << ": " << what << " is not a string";
  return value.get<std::string>();
}

bool json_flag(const json& object, const char* key, bool fallback) {
  if (!object.is_object() || !object.contains(key) || object.at(key).is_null()) return fallback;
  return object.at(key).is_boolean() ? object.at(key).get<bool>() : fallback;
}

// The regex a supported pre_tokenizer section runs.
std::string pretokenizer_pattern(const json& section, const std::string& origin) {
  const auto unsupported = [&](const std::string& why) {
    TITAN_FAIL_INPUT() << origin << ": unsupported pre_tokenizer (" << why
                       << "); supported: Sequence[Split(Regex, Isolated), ByteLevel] or ByteLevel";
  };
  TITAN_CHECK_INPUT(section.is_object()) << origin << ": pre_tokenizer is missing or null";
  const std::string type = section.value("type", "");
  const auto check_byte_level = [&](const json& byte_level, bool regex_expected) {
    if (json_flag(byte_level, "add_prefix_space", false)) unsupported("ByteLevel add_prefix_space");
    if (json_flag(byte_level, "use_regex", true) != regex_expected) {
      unsupported(regex_expected ? "ByteLevel without a regex" : "a Split followed by a ByteLevel regex");
    }
  };
  if (type == "ByteLevel") {
    check_byte_level(section, true);
    return std::string(kGpt2Pattern);
  }
  if (type != "Sequence") unsupported("type " + shown(type));
  const json& steps = member(section, "pretokenizers", "pre_tokenizer", origin);
  if (!steps.is_array() || steps.size() != 2) unsupported("a Sequence of other than 2 steps");
  const json& split = steps[0];
  if (split.value("type", "") != "Split") unsupported("the first step is not a Split");
  if (split.value("behavior", "") != "Isolated") unsupported("Split behavior is not Isolated");
  if (json_flag(split, "invert", false)) unsupported("Split invert");
  if (steps[1].value("type", "") != "ByteLevel") unsupported("the second step is not ByteLevel");
  check_byte_level(steps[1], false);
  const json& pattern = member(split, "pattern", "the Split", origin);
  if (pattern.contains("Regex")) return json_string(pattern["Regex"], "the Split regex", origin);
  if (pattern.contains("String")) {
    return "\\Q" + json_string(pattern["String"], "the Split string", origin) + "\\E";
  }
  unsupported("a Split pattern that is neither Regex nor String");
  return {};
}

}  // namespace

std::vector<std::string> llama3_special_tokens() {
  std::vector<std::string> names = {
      "<|begin_of_text|>", "<|end_of_text|>",          "<|reserved_special_token_0|>",
      "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
      "<|start_header_id|>", "<|end_header_id|>",     "<|eom_id|>",
      "<|eot_id|>",          "<|python_tag|>"};
  for (int i = 3; names.size() < 256; ++i) {
    names.push_back("<|reserved_special_token_" + std::to_string(i) + "|>");
  }
  return names;
}

namespace {

// model.vocab and model.merges, taken out of the JSON as it is parsed so that the document
// tree never holds their 400k entries (it would take most of the load time to build and
// free). Each merge is kept as its two spelled halves; `malformed` names the first entry
// that is not of the expected form.
struct VocabAndMerges {
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::string malformed;
  bool seen_vocab = false, seen_merges = false;
};

json parse_capturing_vocab(std::string_view text, const std::string& origin, VocabAndMerges& out) {
  std::vector<std::string> keys(4);  // the key at each depth 1..3
  std::vector<std::string> pair;     // the halves of an [a, b] merge being read
  bool pair_ok = true;
  const auto in = [&](const char* section) { return keys[1] == "model" && keys[2] == section; };
  const json::parser_callback_t capture = [&](int depth, json::parse_event_t event, json& value) {
    using Event = json::parse_event_t;
    if (event == Event::key) {
      if (depth <= 3) keys[size_t(depth)] = value.get<std::string>();
      return true;
    }
    if (depth == 2 && (event == Event::object_end || event == Event::array_end) && keys[1] == "model") {
      out.seen_vocab = out.seen_vocab || (keys[2] == "vocab" && value.is_object());
      out.seen_merges = out.seen_merges || (keys[2] == "merges" && value.is_array());
      return true;
    }
    if (depth == 3 && event == Event::value && in("vocab")) {
      if (value.is_number_integer()) {
        out.vocab.emplace_back(keys[3], value.get<int64_t>());
      } else if (out.malformed.empty()) {
        out.malformed = "vocab entry " + shown(keys[3]) + " has no integer id";
      }
      return false;
    }
    if (in("merges")) {
      if (depth == 3 && event == Event::value) {  // "a b"
        const std::string both = value.is_string() ? value.get<std::string>() : "";
        const size_t space = both.find(' ');
        if (space != std::string::npos && both.find(' ', space + 1) == std::string::npos) {
          out.merges.emplace_back(both.substr(0, space), both.substr(space + 1));
        } else if (out.malformed.empty()) {
          out.malformed = "merge " + std::to_string(out.merges.size()) + " " +
                          (value.is_string() ? shown(both) : value.dump()) + " is not \"a b\"";
        }
        return false;
      }
      if (depth == 3 && event == Event::array_start) {
        pair.clear();
        pair_ok = true;
        return true;
      }
      if (depth == 4 && event == Event::value) {
        if (value.is_string()) {
          pair.push_back(value.get<std::string>());
        } else {
          pair_ok = false;
        }
        return false;
      }
      if (depth == 3 && event == Event::array_end) {  // [a, b]
        if (pair_ok && pair.size() == 2) {
          out.merges.emplace_back(std::move(pair[0]), std::move(pair[1]));
        } else if (out.malformed.empty()) {
          out.malformed = "merge " + std::to_string(out.merges.size()) + " is neither \"a b\" nor [\"a\", \"b\"]";
        }
        return false;
      }
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), capture);
  } catch (const json::exception& error) {
    TITAN_FAIL_INPUT() << origin << ": not valid JSON (" << error.what() << ")";
  }
  return {};
}

}  // namespace

std::shared_ptr<TokenizerModel> tokenizer_model_from_hf_json(std::string_view text,
                                                             const std::string& origin) {
  VocabAndMerges captured;
  const json root = parse_capturing_vocab(text, origin, captured);
  TITAN_CHECK_INPUT(root.is_object() && root.contains("model"))
      << origin << ": not an HF tokenizer.json (no \"model\" section)";
  auto model = std::make_shared<TokenizerModel>();
  model->origin = origin;
  model->format = TokenizerFormat::HfJson;

  const json& bpe = root["model"];
  const std::string type = bpe.is_object() ? bpe.value("type", "BPE") : "";
  TITAN_CHECK_INPUT(type == "BPE") << origin << ": model type " << shown(type)
                                   << " is not supported; titan.cpp reads byte-level BPE";
  TITAN_CHECK_INPUT(!json_flag(bpe, "byte_fallback", false))
      << origin << ": byte_fallback BPE (SentencePiece style) is not supported";
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    TITAN_CHECK_INPUT(!bpe.contains(key) || bpe[key].is_null() ||
                      (bpe[key].is_string() && bpe[key].get<std::string>().empty()))
        << origin << ": model." << key << " is not supported";
  }
  TITAN_CHECK_INPUT(!root.contains("normalizer") || root["normalizer"].is_null())
      << origin << ": a normalizer is not supported (Llama 3's tokenizer.json has none)";
  model->ignore_merges = json_flag(bpe, "ignore_merges", false);
  TITAN_CHECK_INPUT(captured.malformed.empty()) << origin << ": " << captured.malformed;
  TITAN_CHECK_INPUT(captured.seen_vocab) << origin << ": model.vocab is missing or not an object";
  TITAN_CHECK_INPUT(captured.seen_merges) << origin << ": model.merges is missing or not a list";

  // Vocab: spelled in the byte-level alphabet -> id.
  model->regular_ids.reserve(captured.vocab.size());
  for (auto& [spelled, id] : captured.vocab) {
    std::optional<std::string> bytes = byte_level_unspell(spelled);
    TITAN_CHECK_INPUT(bytes.has_value())
        << origin << ": vocab entry " << shown(spelled) << " (id " << id
        << ") is not in the byte-level alphabet; only byte-level BPE is supported";
    set_token(*model, id, std::move(*bytes), TokenKind::Regular);
  }

  // Merges: rank = position in the list.
  model->merges.reserve(captured.merges.size());
  for (size_t rank = 0; rank < captured.merges.size(); ++rank) {
    const auto& [left, right] = captured.merges[rank];
    const std::optional<std::string> l_bytes = byte_level_unspell(left);
    const std::optional<std::string> r_bytes = byte_level_unspell(right);
    std::optional<int32_t> l, r, m;
    if (l_bytes && r_bytes) {
      l = model->regular_ids.find(*l_bytes);
      r = model->regular_ids.find(*r_bytes);
      m = model->regular_ids.find(*l_bytes + *r_bytes);
    }
    TITAN_CHECK_INPUT(l && r && m) << origin << ": merge " << rank << " (" << shown(left) << " + "
                                   << shown(right) << ") names a token that is not in the vocab";
    model->merges.insert(*l, *r, BpeMerge{int32_t(rank), *m});
  }

  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& added = root["added_tokens"];
    TITAN_CHECK_INPUT(added.is_array()) << origin << ": added_tokens is not a list";
    for (const json& token : added) {
      TITAN_CHECK_INPUT(token.is_object() && token.contains("id") && token["id"].is_number_integer())
          << origin << ": an added token has no integer id";
      const std::string content = json_string(member(token, "content", "an added token", origin),
                                              "an added token's content", origin);
      for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
        TITAN_CHECK_INPUT(!json_flag(token, flag, false))
            << origin << ": added token " << shown(content) << " sets " << flag
            << ", which is not supported (Llama 3's added tokens set none)";
      }
      add_added_token(*model, content, token["id"].get<int64_t>(), json_flag(token, "special", false));
    }
  }

  model->pre_tokenizer = std::make_unique<PreTokenizer>(
      pretokenizer_pattern(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json(), origin));
  finish(*model);
  return model;
}

// ---------------------------------------------------------------------------------------
// tiktoken

namespace {

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int padding = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + size_t(k)];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        v[k] = 0;
        ++padding;
      } else {
        if (padding > 0) return std::nullopt;  // data after '='
        v[k] = base64_value(c);
        if (v[k] < 0) return std::nullopt;
      }
    }
    const uint32_t bits = uint32_t(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
    out.push_back(char(bits >> 16));
    if (padding < 2) out.push_back(char((bits >> 8) & 0xFF));
    if (padding < 1) out.push_back(char(bits & 0xFF));
  }
  return out;
}

}  // namespace

std::shared_ptr<TokenizerModel> tokenizer_model_from_tiktoken(std::string_view text,
                                                              const std::string& origin) {
  auto model = std::make_shared<TokenizerModel>();
  model->origin = origin;
  model->format = TokenizerFormat::Tiktoken;
  model->ignore_merges = true;  // tiktoken looks a whole piece up before merging

  int64_t line_number = 0;
  int64_t last_rank = -1;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(at, end - at);
    at = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    std::optional<std::string> bytes;
    int64_t rank = -1;
    if (space != std::string_view::npos) {
      bytes = base64_decode(line.substr(0, space));
      const std::string_view number = line.substr(space + 1);
      const auto [end_ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), rank);
      if (ec != std::errc() || end_ptr != number.data() + number.size()) rank = -1;
    }
    TITAN_CHECK_INPUT(bytes.has_value() && rank >= 0)
        << origin << ": line " << line_number << " is not `base64 rank`; "
        << (line_number == 1 ? "this is neither an HF tokenizer.json nor a tiktoken file"
                             : "the tiktoken file is damaged");
    set_token(*model, rank, std::move(*bytes), TokenKind::Regular);
    last_rank = std::max(last_rank, rank);
  }
  TITAN_CHECK_INPUT(last_rank >= 0) << origin << ": empty tokenizer file";

  // tiktoken merges the adjacent pair whose concatenation has the lowest rank. As merges:
  // every split of a token into two tokens merges into it, with the token's rank.
  for (size_t id = 0; id < model->token_bytes.size(); ++id) {
    const std::string& bytes = model->token_bytes[id];
    if (model->token_kinds[id] != TokenKind::Regular || bytes.size() < 2) continue;
    for (size_t cut = 1; cut < bytes.size(); ++cut) {
      const std::optional<int32_t> l = model->regular_ids.find(std::string_view(bytes).substr(0, cut));
      const std::optional<int32_t> r = model->regular_ids.find(std::string_view(bytes).substr(cut));
      if (l && r) model->merges.insert(*l, *r, BpeMerge{int32_t(id), int32_t(id)});
    }
  }

  const std::vector<std::string> specials = llama3_special_tokens();
  for (size_t i = 0; i < specials.size(); ++i) {
    add_added_token(*model, specials[i], last_rank + 1 + int64_t(i), true);
  }
  model->pre_tokenizer = std::make_unique<PreTokenizer>(kLlama3Pattern);
  finish(*model);
  return model;
}

}  // namespace titan::data

// Flat hash tables for the tokenizer's lookups: token bytes -> id, and a pair of ids -> its
// merge. Open addressing with linear probing over power-of-two tables; string keys live in
// one arena. Against std::unordered_map this loads Llama 3's 128k tokens and 280k merges
// without 400k node allocations, and a lookup is one or two cache lines, not a chain of
// pointers. Insert-only: a tokenizer's tables never shrink.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace titan::data {

// A fast hash of short byte strings (tokens and pieces average 4-6 bytes): 8 bytes at a
// time, then MurmurHash3's finalizer.
inline uint64_t bytes_hash(std::string_view bytes) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (bytes.size() * 0xC2B2AE3D27D4EB4Full);
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    h = (h ^ word) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  h ^= tail;
  // MurmurHash3's 64-bit finalizer: every input bit reaches the low bits a table uses.
  h = (h ^ (h >> 33)) * 0xFF51AFD7ED558CCDull;
  h = (h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53ull;
  return h ^ (h >> 33);
}

// Token bytes -> id.
class TokenTable {
 public:
  void reserve(size_t count) {
    size_t slots = 16;
    while (slots < count * 2) slots *= 2;
    if (slots > slots_.size()) rehash(slots);
  }
  size_t size() const { return size_; }

  std::optional<int32_t> find(std::string_view bytes) const {
    if (slots_.empty()) return std::nullopt;
    const uint64_t hash = bytes_hash(bytes);
    for (size_t i = hash & mask(); slots_[i].id >= 0; i = (i + 1) & mask()) {
      const Slot& s = slots_[i];
      if (s.hash == hash && s.length == bytes.size() &&
          std::memcmp(keys_.data() + s.offset, bytes.data(), bytes.size()) == 0) {
        return s.id;
      }
    }
    return std::nullopt;
  }

  // False (and nothing changes) when `bytes` is already there.
  bool insert(std::string_view bytes, int32_t id) {
    if (find(bytes)) return false;
    if ((size_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, slots_.size() * 2));
    place({bytes_hash(bytes), uint32_t(keys_.size()), uint32_t(bytes.size()), id});
    keys_.append(bytes);
    ++size_;
    return true;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0;
    uint32_t length = 0;
    int32_t id = -1;  // -1: empty
  };
  size_t mask() const { return slots_.size() - 1; }
  void place(const Slot& slot) {
    size_t i = slot.hash & mask();
    while (slots_[i].id >= 0) i = (i + 1) & mask();
    slots_[i] = slot;
  }
  void rehash(size_t slots) {
    std::vector<Slot> old(slots);
    old.swap(slots_);
    for (const Slot& s : old) {
      if (s.id >= 0) place(s);
    }
  }
  std::vector<Slot> slots_;
  std::string keys_;
  size_t size_ = 0;
};

// Merging the adjacent pair (left, right) gives token `id`; pairs with a lower rank merge
// first.
struct BpeMerge {
  int32_t rank = INT_MAX;
  int32_t id = -1;  // -1: no such merge
};

// (left id, right id) -> merge.
class MergeTable {
 public:
  void reserve(size_t count) {
    size_t slots = 16;
    while (slots < count * 2) slots *= 2;
    if (slots > slots_.size()) rehash(slots);
  }
  size_t size() const { return size_; }

  BpeMerge find(int32_t left, int32_t right) const {
    if (slots_.empty()) return {};
    const uint64_t key = pack(left, right);
    for (size_t i = slot_of(key); slots_[i].key != kEmpty; i = (i + 1) & mask()) {
      if (slots_[i].key == key) return slots_[i].merge;
    }
    return {};
  }

  // False (and nothing changes) when the pair already has a merge: the first one stays.
  bool insert(int32_t left, int32_t right, BpeMerge merge) {
    if (find(left, right).id >= 0) return false;
    if ((size_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, slots_.size() * 2));
    place({pack(left, right), merge});
    ++size_;
    return true;
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);  // the pair (-1, -1) never exists
  struct Slot {
    uint64_t key = kEmpty;
    BpeMerge merge;
  };
  static uint64_t pack(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  }
  size_t mask() const { return slots_.size() - 1; }
  size_t slot_of(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> 17) & mask(); }
  void place(const Slot& slot) {
    size_t i = slot_of(slot.key);
    while (slots_[i].key != kEmpty) i = (i + 1) & mask();
    slots_[i] = slot;
  }
  void rehash(size_t slots) {
    std::vector<Slot> old(slots);
    old.swap(slots_);
    for (const Slot& s : old) {
      if (s.key != kEmpty) place(s);
    }
  }
  std::vector<Slot> slots_;
  size_t size_ = 0;
};

}  // namespace titan::data

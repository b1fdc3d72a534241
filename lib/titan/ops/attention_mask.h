// Which keys a query sees, for the attention kernels of any backend (contract in
// ops/attention.h, AttentionPositions): key j is visible to query i of batch row b when
//   (!causal || k_pos[j] <= q_pos[i]) && q_doc[b, i] == k_doc[b, j]
// with identity positions and a single document where the pointers are null. Positions
// increase and documents never decrease along t, so the keys a query sees in a block are
// one contiguous range and a tile's emptiness shows in its corner elements. Raw pointers
// and plain loops, so that host and device code share one definition.
#pragma once

#include <cstdint>

#include "titan/ops/host_device.h"

namespace titan::ops {

// The mask of one call: pointers into the AttentionPositions tensors (on the kernel's
// device), or null.
struct AttentionMaskView {
  const int32_t* q_pos = nullptr;  // [T]; null: query i at position i
  const int32_t* k_pos = nullptr;  // [Tk]; null: key j at position j
  const int32_t* q_doc = nullptr;  // [B, T]; null: one document
  const int32_t* k_doc = nullptr;  // [B, Tk]
  bool causal = false;
  int64_t T = 0, Tk = 0;

  TITAN_HOST_DEVICE int64_t query_position(int64_t i) const { return q_pos ? q_pos[i] : i; }
  TITAN_HOST_DEVICE int64_t key_position(int64_t j) const { return k_pos ? k_pos[j] : j; }
  TITAN_HOST_DEVICE int32_t query_document(int64_t b, int64_t i) const {
    return q_doc[b * T + i];
  }
  TITAN_HOST_DEVICE int32_t key_document(int64_t b, int64_t j) const {
    return k_doc[b * Tk + j];
  }
};

// Whether the mask leaves any key of [j0, j0 + nk) to any query of [i0, i0 + nq) of batch
// row b. False means the tile is certainly empty; true may still be empty when documents
// interleave without meeting (never for documents shared by queries and keys).
TITAN_HOST_DEVICE inline bool tile_visible(const AttentionMaskView& m, int64_t b, int64_t i0,
                                           int64_t nq, int64_t j0, int64_t nk) {
  if (nq <= 0 || nk <= 0) return false;
  // The first key after the last query: every key of the tile is in every query's future.
  if (m.causal && m.key_position(j0) > m.query_position(i0 + nq - 1)) return false;
  if (m.q_doc) {
    if (m.key_document(b, j0 + nk - 1) < m.query_document(b, i0)) return false;
    if (m.key_document(b, j0) > m.query_document(b, i0 + nq - 1)) return false;
  }
  return true;
}

// The keys [j0 + lo, j0 + hi) of the block [j0, j0 + nk) visible to query i of batch row
// b, 0 <= lo <= hi <= nk (lo == hi: none). lo passes the earlier documents; hi stops at
// the query's position (causal) and at its document's end. Binary searches, 6 steps for a
// block of 64.
TITAN_HOST_DEVICE inline void visible_keys(const AttentionMaskView& m, int64_t b, int64_t i,
                                           int64_t j0, int64_t nk, int64_t* lo, int64_t* hi) {
  int64_t first = 0, end = nk;
  if (m.causal) {
    if (!m.q_pos) {
      // Identity positions (k_pos is null too): keys j <= i.
      end = i - j0 + 1;
      end = end < 0 ? 0 : (end > nk ? nk : end);
    } else {
      // First key of the block after the query's position.
      const int64_t position = m.query_position(i);
      int64_t a = 0, z = nk;
      while (a < z) {
        const int64_t mid = (a + z) / 2;
        if (m.key_position(j0 + mid) <= position) a = mid + 1; else z = mid;
      }
      end = a;
    }
  }
  if (m.q_doc) {
    const int32_t document = m.query_document(b, i);
    // First key of the query's document, then the first key after it (within [first, end)).
    int64_t a = 0, z = end;
    while (a < z) {
      const int64_t mid = (a + z) / 2;
      if (m.key_document(b, j0 + mid) < document) a = mid + 1; else z = mid;
    }
    first = a;
    z = end;
    while (a < z) {
      const int64_t mid = (a + z) / 2;
      if (m.key_document(b, j0 + mid) <= document) a = mid + 1; else z = mid;
    }
    end = a;
  }
  *lo = first;
  *hi = end;
}

}  // namespace titan::ops

// The router's choice for one token (ops/moe.h), one definition for the CPU and the GPU
// kernels: both make the same comparisons in the same order, so equal scores choose alike
// on every device and a choice never depends on where it was made.
//   c [E]         the token's choice scores (score + bias)
//   groups > 1    a group's score is the sum of its two largest c (ties: the lower index);
//                 limited_groups rounds keep the best group left (ties: the lower group)
//   sel [top_k]   the top_k experts of largest c among the kept groups', in that order
//                 (ties: the lower expert index)
// kept [E] and group_kept [groups] are the caller's scratch.
#pragma once

#include <cstdint>

#include "titan/ops/host_device.h"

namespace titan::ops {

TITAN_HOST_DEVICE inline void choose_experts(const float* c, int64_t E, int64_t groups,
                                             int64_t limited_groups, int64_t top_k, char* kept,
                                             char* group_kept, int32_t* sel) {
  const int64_t per_group = E / groups;
  for (int64_t e = 0; e < E; ++e) kept[e] = 1;
  if (groups > 1) {
    for (int64_t g = 0; g < groups; ++g) group_kept[g] = 0;
    for (int64_t round = 0; round < limited_groups; ++round) {
      int64_t best = -1;
      float best_score = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        if (group_kept[g]) continue;
        const float* cg = c + g * per_group;
        int64_t first = 0;
        for (int64_t j = 1; j < per_group; ++j) first = cg[j] > cg[first] ? j : first;
        int64_t second = first == 0 ? 1 : 0;
        for (int64_t j = 0; j < per_group; ++j) {
          if (j != first && cg[j] > cg[second]) second = j;
        }
        const float score = cg[first] + cg[second];
        if (best < 0 || score > best_score) {
          best = g;
          best_score = score;
        }
      }
      if (best < 0) break;  // every group kept (limited_groups <= groups: never)
      group_kept[best] = 1;
    }
    for (int64_t e = 0; e < E; ++e) kept[e] = group_kept[e / per_group];
  }
  for (int64_t k = 0; k < top_k; ++k) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e) {
      if (kept[e] && (best < 0 || c[e] > c[best])) best = e;
    }
    if (best < 0) break;  // top_k <= the kept experts (check_router): never
    sel[k] = int32_t(best);
    kept[best] = 0;
  }
}

}  // namespace titan::ops

// Expert parallelism as the mixture-of-experts layer sees it (nn/moe.h): the experts are
// split over the ranks of an ep group, rank r holding experts [r E / ep, (r + 1) E / ep),
// and each rank's tokens travel to the ranks that hold their experts and back. exchange()
// is that move: all-to-all-v of rows, chunk r of `in` (send_rows[r] rows) to rank r, chunk r
// of `out` (recv_rows[r] rows) from rank r; rows are the tensors' last dim (any dtype).
//
// Implementations: the one-rank one here (no_expert_parallel(): a copy) and the mesh's ep
// group (distributed/expert_parallel.h: Communicator::all_to_all).
#pragma once

#include <cstdint>
#include <vector>

#include "titan/core/tensor.h"

namespace titan::nn {

class ExpertParallel {
 public:
  virtual ~ExpertParallel() = default;
  virtual int64_t size() const = 0;
  virtual int64_t rank() const = 0;
  // Collective over the group; every rank's send_rows[r] is rank r's recv_rows[this rank].
  virtual void exchange(const Tensor& in, const std::vector<int64_t>& send_rows, Tensor& out,
                        const std::vector<int64_t>& recv_rows) const = 0;
};

const ExpertParallel& no_expert_parallel();

}  // namespace titan::nn

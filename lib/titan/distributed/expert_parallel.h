// The mesh's expert-parallel group as the MoE layer sees it (nn/expert_parallel.h): its
// exchange is one Communicator::all_to_all, waited on at once.
#pragma once

#include "titan/distributed/communicator.h"
#include "titan/nn/expert_parallel.h"

namespace titan::distributed {

class ExpertParallelGroup final : public nn::ExpertParallel {
 public:
  explicit ExpertParallelGroup(Communicator& group) : group_(group) {}  // outlives this
  int64_t size() const override { return group_.size(); }
  int64_t rank() const override { return group_.rank(); }
  void exchange(const Tensor& in, const std::vector<int64_t>& send_rows, Tensor& out,
                const std::vector<int64_t>& recv_rows) const override;

 private:
  Communicator& group_;
};

}  // namespace titan::distributed

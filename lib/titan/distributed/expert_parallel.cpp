#include "titan/distributed/expert_parallel.h"

namespace titan::distributed {

void ExpertParallelGroup::exchange(const Tensor& in, const std::vector<int64_t>& send_rows,
                                   Tensor& out, const std::vector<int64_t>& recv_rows) const {
  const int64_t width = in.dim() == 0 ? 1 : in.size(in.dim() - 1);
  std::vector<int64_t> send(send_rows), recv(recv_rows);
  for (int64_t& n : send) n *= width;
  for (int64_t& n : recv) n *= width;
  Tensor flat_out = out.reshape({out.numel()});
  group_.all_to_all(in.reshape({in.numel()}), send, flat_out, recv).wait();
}

}  // namespace titan::distributed

// Llama's SwiGLU feed-forward: y = w2( silu(x w1^T) * (x w3^T) )
// Shapes: x, y [N, D]; a = x w1^T, b = x w3^T, g = silu(a) * b [N, F].
// Parameters "<prefix>.w1.weight" [F, D], w3 [F, D], w2 [D, F].
// Tensor parallel (nn/tensor_parallel.h): w1, w3 column-parallel and w2 row-parallel, so a
// rank computes its slice of F; x and y are its rows of the residual stream, gathered
// before w1, w3 and reduced after w2.
#pragma once

#include "titan/nn/linear.h"

namespace titan::nn {

struct FeedForwardRecord {
  Tensor x;  // w1 and w3's input: all N rows (gathered)
  bool x_gathered = false;  // x is a gathered copy (sequence parallel), not the input
  Tensor a, b, g;
  // Set by backward_input, consumed and released by backward_weight:
  Tensor dy, da, db;  // dy: gradient at w2's output, all N rows
  int64_t bytes() const;
};

class FeedForward {
 public:
  // w1 gets `init`; w2 and w3 get `output_init` (torchtitan's depth-scaled std, w3 included).
  FeedForward(const std::string& prefix, int64_t dim, int64_t hidden_dim, InitRule init,
              InitRule output_init, const Placer& placer = {});

  std::vector<Parameter*> parameters();

  // x: this rank's rows of the [N, D] input; y: the same rows of the output.
  void forward(const Tensor& x, Tensor& y, FeedForwardRecord& record) const;
  void backward_input(const Tensor& dy, FeedForwardRecord& record, Tensor& dx,
                      ops::Accumulate accumulate) const;
  void backward_weight(FeedForwardRecord& record);

 private:
  const TensorParallel& tp_;
  Linear w1_, w2_, w3_;
};

}  // namespace titan::nn

// Parameter units: the groups of parameters that FSDP gathers, frees and reduces together
// (FSDP2's fully_shard groups: each TransformerBlock, the embedding, the final norm and
// output). A model names its units and calls UnitHooks around each unit's use; it knows
// nothing of what the hooks do (distributed/fsdp.h gathers and reduce-scatters; none at all on
// one rank).
//
// Calls a model makes for one microbatch:
//   before_forward(u)   the unit's forward needs value() of its parameters
//   after_forward(u)    done with them until its backward
//   before_backward(u)  its backward needs grad() (and value() when needs_values_in_backward)
//   after_backward(u)   every gradient of the unit for this microbatch is in grad()
// A split backward (backward_input for the whole model, then backward_weight) calls
// before_backward for every unit first and after_backward as each unit's weights are done.
#pragma once

#include <string>
#include <vector>

#include "titan/nn/parameter.h"

namespace titan::nn {

struct ParameterUnit {
  std::string name;                    // "layers.3", "tok_embeddings", "norm, output"
  std::vector<Parameter*> parameters;  // in the order of the model's parameters()
  // False when the backward reads no weight of the unit (an embedding: its gradient needs
  // only the token ids), so a sharded unit need not be gathered again for it.
  bool needs_values_in_backward = true;
  // False for the unit whose forward ends the model's and whose backward starts it: freeing
  // it after forward would only gather it again at once (torchtitan's default keeps it).
  bool reshard_after_forward_by_default = true;
};

class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  virtual void before_forward(int unit) = 0;
  virtual void after_forward(int unit) = 0;
  virtual void before_backward(int unit) = 0;
  virtual void after_backward(int unit) = 0;
};

}  // namespace titan::nn

// The optimizer over a model's parameters, and the gradient utilities the training loop
// calls around it (global norm, clipping, zeroing).
//
//   std::vector<nn::Parameter*> params = model.parameters();
//   AdamW optimizer = AdamW::from_config(params, config);
//   double norm = grad_norm(params);                 // logged, pre-clip (torchtitan)
//   clip_grads(params, config.training.max_norm, norm);
//   optimizer.step(schedule.lr(step));
//   zero_grads(params);
//
// torchtitan builds one param group with every trainable parameter, so weight decay hits
// all of them: norm weights, the embedding and the output layer included (notes §6).
// optimizer.name picks how decay enters the update:
//   AdamW  torch.optim.AdamW: decoupled, p <- p * (1 - lr * wd) before the Adam update
//   Adam   torch.optim.Adam: L2 coupled into the gradient, g' = g + wd * p, which then
//          passes through the moments (the parameter's .grad itself is left as it was)
// Both then run the same Adam update (ops/adamw.h) with torch's bias correction.
//
// The optimizer, the norm and clipping work on each parameter's shard (nn/parameter.h):
// under FSDP every rank steps its own rows, and the state exists only for them.
//
// State: exp_avg and exp_avg_sq per parameter, f32 zeros shaped like the parameter's
// shard and on its device, allocated when the optimizer is built, and the count of steps taken (torch's
// per-parameter `step`, the same for all). Checkpoints read and write them through the
// accessors; the bytes are state_bytes().
#pragma once

#include <cstdint>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/core/tensor.h"
#include "titan/nn/parameter.h"

namespace titan::train {

enum class WeightDecayMode {
  Decoupled,  // AdamW
  Coupled,    // Adam's L2 term added to the gradient
};

struct AdamWSettings {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  WeightDecayMode weight_decay_mode = WeightDecayMode::Decoupled;

  static AdamWSettings from_config(const config::OptimizerSection& section);
};

class AdamW {
 public:
  // The parameters must outlive the optimizer; each may appear once (a tied weight is one
  // Parameter, stepped once).
  AdamW(std::vector<nn::Parameter*> parameters, const AdamWSettings& settings);
  static AdamW from_config(std::vector<nn::Parameter*> parameters,
                           const config::JobConfig& config);
  // Tensors are handles: a copy would share the moments with the original.
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;
  AdamW(AdamW&&) = default;
  AdamW& operator=(AdamW&&) = default;

  // One update of every parameter from its gradient at learning rate `lr` (the scheduled
  // rate of this step). Increments the step count first, as torch does.
  void step(double lr);

  const AdamWSettings& settings() const { return settings_; }
  const std::vector<nn::Parameter*>& parameters() const { return parameters_; }
  int64_t steps_taken() const { return steps_taken_; }
  void set_steps_taken(int64_t steps);  // a checkpoint restores it with the moments

  // The moments of parameters()[index], shaped like its shard.
  const Tensor& exp_avg(size_t index) const { return exp_avg_.at(index); }
  Tensor& exp_avg(size_t index) { return exp_avg_.at(index); }
  const Tensor& exp_avg_sq(size_t index) const { return exp_avg_sq_.at(index); }
  Tensor& exp_avg_sq(size_t index) { return exp_avg_sq_.at(index); }

  // Bytes of exp_avg and exp_avg_sq together (8 per parameter element).
  int64_t state_bytes() const;

 private:
  std::vector<nn::Parameter*> parameters_;
  AdamWSettings settings_;
  std::vector<Tensor> exp_avg_;
  std::vector<Tensor> exp_avg_sq_;
  int64_t steps_taken_ = 0;
};

// The L2 norm of the shard gradients (ops::grad_norm_total): what torchtitan logs when
// nothing is sharded.
double grad_norm(const std::vector<nn::Parameter*>& parameters);
// Sum of squares of this rank's shard gradients; sharded callers all-reduce it over the
// shard group and take the square root.
double grad_sum_of_squares(const std::vector<nn::Parameter*>& parameters);
// Scales every gradient by min(1, max_norm / (total_norm + 1e-6)), torch's
// clip_grads_with_norm_; total_norm is grad_norm()'s result (all-reduced when sharded).
void clip_grads(const std::vector<nn::Parameter*>& parameters, double max_norm,
                double total_norm);
// Sets every gradient to zero; parameter gradients accumulate (+=) over microbatches.
void zero_grads(const std::vector<nn::Parameter*>& parameters);

}  // namespace titan::train

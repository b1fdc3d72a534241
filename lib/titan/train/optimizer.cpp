// AdamW / Adam over a parameter list, and the gradient utilities; optimizer.h says why
// each behaves as it does.
#include "titan/train/optimizer.h"

#include <set>

#include "titan/core/copy.h"
#include "titan/core/error.h"
#include "titan/ops/adamw.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/grad_norm.h"

namespace titan::train {
namespace {

// The gradients of this rank's shards (the whole gradients when unsharded).
std::vector<Tensor> gradients_of(const std::vector<nn::Parameter*>& parameters) {
  std::vector<Tensor> grads;  // handles: they share the parameters' storage
  grads.reserve(parameters.size());
  for (nn::Parameter* p : parameters) grads.push_back(p->shard_grad());
  return grads;
}

}  // namespace

AdamWSettings AdamWSettings::from_config(const config::OptimizerSection& section) {
  AdamWSettings settings;
  settings.beta1 = section.beta1;
  settings.beta2 = section.beta2;
  settings.eps = section.eps;
  settings.weight_decay = section.weight_decay;
  switch (section.name) {
    case config::OptimizerName::AdamW:
      settings.weight_decay_mode = WeightDecayMode::Decoupled;
      break;
    case config::OptimizerName::Adam: settings.weight_decay_mode = WeightDecayMode::Coupled; break;
  }
  return settings;
}

AdamW::AdamW(std::vector<nn::Parameter*> parameters, const AdamWSettings& settings)
    : parameters_(std::move(parameters)), settings_(settings) {
  std::set<const nn::Parameter*> seen;
  MemoryTagScope tag("optimizer");
  exp_avg_.reserve(parameters_.size());
  exp_avg_sq_.reserve(parameters_.size());
  for (nn::Parameter* p : parameters_) {
    TITAN_CHECK(p != nullptr) << "AdamW: null parameter";
    TITAN_CHECK(seen.insert(p).second)
        << "AdamW: parameter " << p->name() << " listed twice; it would be stepped twice";
    const Tensor& value = p->shard();
    exp_avg_.push_back(Tensor::zeros(value.shape(), DType::F32, value.device()));
    exp_avg_sq_.push_back(Tensor::zeros(value.shape(), DType::F32, value.device()));
  }
}

AdamW AdamW::from_config(std::vector<nn::Parameter*> parameters,
                         const config::JobConfig& config) {
  return AdamW(std::move(parameters), AdamWSettings::from_config(config.optimizer));
}

void AdamW::set_steps_taken(int64_t steps) {
  TITAN_CHECK(steps >= 0) << "AdamW: steps taken must be >= 0, got " << steps;
  steps_taken_ = steps;
}

void AdamW::step(double lr) {
  ++steps_taken_;
  ops::AdamWOptions options;
  options.lr = lr;
  options.beta1 = settings_.beta1;
  options.beta2 = settings_.beta2;
  options.eps = settings_.eps;
  const bool coupled = settings_.weight_decay_mode == WeightDecayMode::Coupled;
  options.weight_decay = coupled ? 0.0 : settings_.weight_decay;
  MemoryTagScope tag("optimizer");
  if (parameters_.empty()) return;
  if (!coupled || settings_.weight_decay == 0.0) {
    // One call for every parameter: on a GPU a launch per 48 tensors instead of one each.
    std::vector<Tensor> values, grads;
    for (nn::Parameter* p : parameters_) {
      values.push_back(p->shard());  // handles: the steps write through to the shards
      grads.push_back(p->shard_grad());
    }
    ops::adamw_step_multi_tensor(values, grads, exp_avg_, exp_avg_sq_, options, steps_taken_);
    return;
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    Tensor& value = parameters_[i]->shard();
    const Tensor& grad = parameters_[i]->shard_grad();
    // torch.optim.Adam: grad = grad.add(param, alpha=weight_decay), out of place, so the
    // parameter's gradient is unchanged. The scratch comes back from the allocator's cache.
    Tensor decayed_grad = Tensor::empty(grad.shape(), DType::F32, grad.device());
    copy_tensor(grad, decayed_grad);
    ops::axpy(float(settings_.weight_decay), value, decayed_grad);
    ops::adamw_step(value, decayed_grad, exp_avg_[i], exp_avg_sq_[i], options, steps_taken_);
  }
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (size_t i = 0; i < exp_avg_.size(); ++i) {
    bytes += exp_avg_[i].bytes() + exp_avg_sq_[i].bytes();
  }
  return bytes;
}

double grad_norm(const std::vector<nn::Parameter*>& parameters) {
  const std::vector<Tensor> grads = gradients_of(parameters);
  return ops::grad_norm_total(grads);
}

double grad_sum_of_squares(const std::vector<nn::Parameter*>& parameters) {
  double sum = 0;  // in parameter order, whatever the device
  for (double s : ops::sums_of_squares(gradients_of(parameters))) sum += s;
  return sum;
}

void clip_grads(const std::vector<nn::Parameter*>& parameters, double max_norm,
                double total_norm) {
  std::vector<Tensor> grads = gradients_of(parameters);
  ops::clip_grads_with_norm(grads, max_norm, total_norm);
}

void zero_grads(const std::vector<nn::Parameter*>& parameters) {
  for (nn::Parameter* p : parameters) p->zero_grad();
}

}  // namespace titan::train

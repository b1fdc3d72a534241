#include "training_run.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "support/gradient_check.h"
#include "titan/models/registry.h"

using namespace titan;

Tensor gather_whole(const nn::Parameter& p, const Tensor& box,
                    distributed::Communicator* world) {
  Tensor whole = Tensor::zeros(p.global_shape(), DType::F32);
  if (p.placement().writes_checkpoint()) {
    const float* piece = box.data<float>();
    float* out = whole.mutable_data<float>();
    nn::for_each_box_run(p.global_shape(), p.local_box(),
                         [&](int64_t global, int64_t local, int64_t length) {
                           std::copy_n(piece + local, length, out + global);
                         });
  }
  if (world) world->all_reduce(whole).wait();
  return whole;
}

std::map<std::string, Tensor> whole_parameters(train::Trainer& trainer,
                                               const config::JobConfig& config,
                                               distributed::Communicator* world) {
  std::map<std::string, nn::Parameter*> held;
  for (nn::Parameter* p : trainer.model().parameters()) held[p->name()] = p;
  std::map<std::string, Tensor> whole;
  for (const models::ParameterShape& shape :
       models::model_family(config.model.name).parameter_shapes(config)) {
    const auto at = held.find(shape.name);
    if (at != held.end()) {
      whole[shape.name] = gather_whole(*at->second, at->second->shard(), world);
    } else {  // another stage's: zeros here, summed with its holder's
      Tensor t = Tensor::zeros(shape.shape, DType::F32);
      if (world) world->all_reduce(t).wait();
      whole[shape.name] = t;
    }
  }
  return whole;
}

TrainingRun train_run(const config::JobConfig& config, distributed::Mesh* mesh) {
  train::Trainer trainer(config, mesh);
  TrainingRun run;
  run.steps = trainer.train();
  run.parameters = whole_parameters(trainer, config, mesh ? &mesh->world() : nullptr);
  return run;
}

void expect_same_run(const TrainingRun& run, const TrainingRun& reference) {
  ASSERT_EQ(run.steps.size(), reference.steps.size());
  for (size_t s = 0; s < run.steps.size(); ++s) {
    const train::StepResult& want = reference.steps[s];
    EXPECT_NEAR(run.steps[s].loss, want.loss, 1e-5 * want.loss) << "step " << s + 1;
    EXPECT_NEAR(run.steps[s].grad_norm, want.grad_norm, 1e-5 * want.grad_norm)
        << "step " << s + 1;
  }
  ASSERT_EQ(run.parameters.size(), reference.parameters.size());
  for (const auto& [name, value] : reference.parameters) {
    titan::testing::expect_close(titan::testing::to_values(run.parameters.at(name)),
                                 titan::testing::to_values(value), 1e-5, name);
  }
}

RunDifference run_difference(const TrainingRun& run, const TrainingRun& reference) {
  RunDifference d;
  for (size_t s = 0; s < std::min(run.steps.size(), reference.steps.size()); ++s) {
    const train::StepResult &got = run.steps[s], &want = reference.steps[s];
    d.loss = std::max(d.loss, std::fabs(got.loss - want.loss) / std::fabs(want.loss));
    d.grad_norm =
        std::max(d.grad_norm, std::fabs(got.grad_norm - want.grad_norm) / want.grad_norm);
  }
  for (const auto& [name, value] : reference.parameters) {
    const auto at = run.parameters.find(name);
    if (at == run.parameters.end()) continue;
    const titan::testing::Values a = titan::testing::to_values(at->second);
    const titan::testing::Values b = titan::testing::to_values(value);
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      diff += (a[i] - b[i]) * (a[i] - b[i]);
      norm += b[i] * b[i];
    }
    d.parameters = std::max(d.parameters, std::sqrt(diff / std::max(norm, 1e-30)));
  }
  return d;
}

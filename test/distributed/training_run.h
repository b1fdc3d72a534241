// A training run on a mesh against one rank's: the steps' losses and grad norms, and every
// parameter's whole value at the end, gathered from the ranks' boxes. What the tests of each
// parallelism compare layouts with (losses and parameters within 1e-5 relative).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/distributed/mesh.h"
#include "titan/train/trainer.h"

struct TrainingRun {
  std::vector<titan::train::StepResult> steps;
  std::map<std::string, titan::Tensor> parameters;  // whole, by name
};

// The whole tensor from every rank's box of p (its shard, or its shard gradient): the
// rank that writes the box to a checkpoint writes it into a zero tensor and `world` sums
// them (each element written once, so the sum is exact). Collective over `world`; none:
// one rank.
titan::Tensor gather_whole(const titan::nn::Parameter& p, const titan::Tensor& box,
                           titan::distributed::Communicator* world);

// Every parameter's whole value (gather_whole of its shard; a pipeline rank holds only its
// stages' parameters, the others' boxes come from their ranks).
std::map<std::string, titan::Tensor> whole_parameters(titan::train::Trainer& trainer,
                                                      const titan::config::JobConfig& config,
                                                      titan::distributed::Communicator* world);

// Trains `config` on `mesh` (none: one rank) and gathers the result.
TrainingRun train_run(const titan::config::JobConfig& config, titan::distributed::Mesh* mesh);

// The largest |p - p_ref| / |p_ref| over the parameters (2-norms), and over the steps the
// largest relative difference of loss and of grad norm.
struct RunDifference {
  double parameters = 0, loss = 0, grad_norm = 0;
};
RunDifference run_difference(const TrainingRun& run, const TrainingRun& reference);

// EXPECTs every step's loss and grad norm, and every parameter, within 1e-5 relative.
void expect_same_run(const TrainingRun& run, const TrainingRun& reference);

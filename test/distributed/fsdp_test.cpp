// FSDP, HSDP and DDP against one rank: the same global batch gives the same losses and
// parameters on every mesh, and counters show the feature acted (bytes per rank,
// collectives per microbatch). Run by CTest under mpirun (test/CMakeLists.txt); every rank
// also trains the one-rank reference on its own, which for the tiny model takes a second.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "distributed_test_main.h"
#include "tiny_training_job.h"
#include "support/gradient_check.h"
#include "support/train_process.h"
#include "titan/core/allocator.h"
#include "titan/distributed/fsdp.h"
#include "titan/distributed/mesh.h"
#include "titan/ops/cast.h"
#include "titan/train/trainer.h"

namespace titan::distributed {
namespace {

namespace fs = std::filesystem;

// Sequences per step without accumulation: 4, or 6 on 3 ranks (uneven shards, even batch).
int64_t global_batch() { return 4 % test_world().size() == 0 ? 4 : 6; }
constexpr int64_t kSteps = kTinyTrainingSteps;

config::JobConfig tiny_job(const std::string& name, int64_t dp_replicate, int64_t dp_shard,
                           int64_t accumulation) {
  config::JobConfig c = tiny_training_job("titan_fsdp_test_" + name);
  c.training.global_batch_size = global_batch() * accumulation;
  c.training.local_batch_size = global_batch() / (dp_replicate * dp_shard);
  c.parallelism.data_parallel_replicate_degree = dp_replicate;
  c.parallelism.data_parallel_shard_degree = dp_shard;
  return c;
}

struct Run {
  std::vector<train::StepResult> steps;
  std::vector<std::string> names;
  std::vector<Tensor> parameters;  // whole, gathered
};

Run train_alone(config::JobConfig config) {
  config.parallelism.data_parallel_replicate_degree = 1;
  config.parallelism.data_parallel_shard_degree = 1;
  config.training.local_batch_size = global_batch();
  config.job.dump_folder += "_alone";
  train::Trainer trainer(config);
  Run run;
  run.steps = trainer.train();
  for (nn::Parameter* p : trainer.model().parameters()) {
    run.names.push_back(p->name());
    run.parameters.push_back(p->shard());
  }
  return run;
}

Run train_on_mesh(const config::JobConfig& config) {
  Mesh mesh(mesh_shape_from_config(config.parallelism, test_world().size()), test_world());
  train::Trainer trainer(config, &mesh);
  Run run;
  run.steps = trainer.train();
  for (nn::Parameter* p : trainer.model().parameters()) {
    run.names.push_back(p->name());
    run.parameters.push_back(gather_parameter(*p, mesh.dp_shard_cp()));
  }
  return run;
}

// Parameters after kSteps AdamW steps: element by element within 1e-5 of max(|x|, 1).
// AdamW divides each gradient by its own running magnitude, so an element whose gradient
// is as small as the layouts' rounding differences (sums reduced in another order) can
// take a step of up to lr on one layout and not on the other: one element in a thousand of
// a tensor (at least one) may stray, to 1e-4 (a twentieth of lr x steps here). A wrong
// reduction or a stale shard moves many elements by far more.
void expect_parameters_close(const testing::Values& actual, const testing::Values& expected,
                             const std::string& name) {
  ASSERT_EQ(actual.size(), expected.size()) << name;
  size_t strays = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double scale = std::max(std::fabs(expected[i]), 1.0);
    const double diff = std::fabs(actual[i] - expected[i]);
    if (diff <= 1e-5 * scale) continue;
    ++strays;
    EXPECT_LE(diff, 1e-4 * scale) << name << "[" << i << "]: " << actual[i] << " vs "
                                  << expected[i];
  }
  EXPECT_LE(strays, std::max<size_t>(1, expected.size() / 1000))
      << name << ": " << strays << " of " << expected.size() << " elements beyond 1e-5";
}

void expect_same_training(const Run& mesh_run, const Run& alone) {
  ASSERT_EQ(mesh_run.steps.size(), size_t(kSteps));
  ASSERT_EQ(alone.steps.size(), size_t(kSteps));
  for (size_t s = 0; s < mesh_run.steps.size(); ++s) {
    EXPECT_NEAR(mesh_run.steps[s].loss, alone.steps[s].loss, 1e-5 * alone.steps[s].loss)
        << "step " << s + 1;
    EXPECT_NEAR(mesh_run.steps[s].grad_norm, alone.steps[s].grad_norm,
                1e-5 * alone.steps[s].grad_norm)
        << "step " << s + 1;
  }
  ASSERT_EQ(mesh_run.names, alone.names);
  for (size_t i = 0; i < alone.parameters.size(); ++i) {
    expect_parameters_close(testing::to_values(mesh_run.parameters[i]),
                            testing::to_values(alone.parameters[i]), alone.names[i]);
  }
}

void check_layout(int64_t dp_replicate, int64_t dp_shard, int64_t accumulation, bool tied,
                  const std::string& name) {
  if (test_world().size() != dp_replicate * dp_shard) {
    GTEST_SKIP() << "needs " << dp_replicate * dp_shard << " ranks";
  }
  config::JobConfig config = tiny_job(name, dp_replicate, dp_shard, accumulation);
  config.model.enable_weight_tying = tied;
  const Run alone = train_alone(config);
  const Run mesh_run = train_on_mesh(config);
  expect_same_training(mesh_run, alone);
}

TEST(Fsdp, LossesAndParametersEqualOneRank) {
  check_layout(1, test_world().size(), 1, false, "fsdp");
}

TEST(Fsdp, WithGradientAccumulation) { check_layout(1, test_world().size(), 2, false, "fsdp_acc"); }

TEST(Fsdp, TiedEmbeddingAndOutput) { check_layout(1, test_world().size(), 1, true, "fsdp_tied"); }

TEST(Hsdp, TwoByTwoEqualsOneRank) { check_layout(2, 2, 1, false, "hsdp"); }

TEST(Hsdp, TwoByTwoWithAccumulation) { check_layout(2, 2, 2, false, "hsdp_acc"); }

TEST(Ddp, ReplicasEqualOneRank) { check_layout(test_world().size(), 1, 2, false, "ddp"); }

// With the same global validation batch (local x dp), the mesh's validation loss is the
// one rank's (validation reads the validation split of the same shards).
TEST(Fsdp, ValidationEqualsOneRank) {
  const int64_t n = test_world().size();
  config::JobConfig config = tiny_job("validation", 1, n, 1);
  config.training.steps = 2;
  config.validation.enable = true;
  config.validation.freq = 2;
  config.validation.seq_len = 64;
  config.validation.local_batch_size = global_batch() / n;
  config.validation.steps = 3;
  Mesh mesh(mesh_shape_from_config(config.parallelism, n), test_world());
  train::Trainer sharded(config, &mesh);
  const std::vector<train::StepResult> steps = sharded.train();
  ASSERT_TRUE(steps.back().val_loss.has_value());
  config::JobConfig alone_config = config;
  alone_config.parallelism.data_parallel_shard_degree = 1;
  alone_config.training.local_batch_size = global_batch();
  alone_config.validation.local_batch_size = global_batch();
  alone_config.job.dump_folder += "_alone";
  train::Trainer alone(alone_config);
  alone.train();
  const train::ValidationResult a = alone.validate(), b = sharded.validate();
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NEAR(b.loss, a.loss, 1e-5 * a.loss);
  EXPECT_NEAR(*steps.back().val_loss, a.loss, 1e-5 * a.loss);
  EXPECT_NEAR(b.perplexity, std::exp(a.loss), 1e-4 * b.perplexity);
}

// Per-rank parameter and optimizer bytes are the total over n plus padding: the counter
// of the allocator, before and after building the trainer.
TEST(Fsdp, ParameterAndOptimizerBytesAreAShard) {
  const int64_t n = test_world().size();
  config::JobConfig config = tiny_job("bytes", 1, n, 1);
  Mesh mesh(mesh_shape_from_config(config.parallelism, n), test_world());
  Allocator& allocator = allocator_for(Device::cpu());
  const int64_t before = allocator.stats().current_bytes;
  train::Trainer trainer(config, &mesh);
  const int64_t held = allocator.stats().current_bytes - before;
  int64_t total_elements = 0, padded_rows_elements = 0;
  for (nn::Parameter* p : trainer.model().parameters()) {
    const int64_t numel = shape_numel(p->global_shape());
    total_elements += numel;
    padded_rows_elements += nn::rows_per_shard(p->global_shape()[0], n) * (numel / p->global_shape()[0]);
  }
  // Value, gradient, exp_avg, exp_avg_sq: 16 bytes per element of the shard.
  const double shard_bytes = 16.0 * double(total_elements) / double(n);
  EXPECT_GE(double(held), 0.95 * shard_bytes) << "held " << held;
  // Padding is at most one row per parameter; the rest (data source, RoPE table) is small.
  EXPECT_LE(double(held), 16.0 * double(padded_rows_elements) + 4.0 * (1 << 20)) << "held " << held;
  EXPECT_EQ(trainer.optimizer().state_bytes() % 8, 0);
  EXPECT_LE(double(trainer.optimizer().state_bytes()), 8.0 * double(padded_rows_elements));
}

// Collectives per microbatch on the shard group: one reduce-scatter per unit; all-gathers
// as each reshard_after_forward mode implies (distributed/fsdp.h). Tiny: 8 layers, so 10 units:
// the embedding (not gathered for its backward), 8 layers, norm + output (not freed after
// forward by default).
TEST(Fsdp, CollectivesPerMicrobatchFollowTheReshardMode) {
  const int64_t n = test_world().size();
  const int64_t layers = 8, units = layers + 2, accumulation = 2;
  struct Case {
    config::ReshardAfterForward mode;
    int64_t gathers_per_microbatch;
  };
  for (const Case& c : {Case{config::ReshardAfterForward::Default, 1 + 2 * layers + 1},
                        Case{config::ReshardAfterForward::Always, 1 + 2 * layers + 2},
                        Case{config::ReshardAfterForward::Never, units}}) {
    config::JobConfig config = tiny_job("counts", 1, n, accumulation);
    config.training.steps = 1;
    config.parallelism.fsdp_reshard_after_forward = c.mode;
    Mesh mesh(mesh_shape_from_config(config.parallelism, n), test_world());
    train::Trainer trainer(config, &mesh);
    mesh.reset_stats();
    trainer.train_step();
    const CommStats& stats = mesh.dp_shard_cp().stats();
    const std::string mode(config::choice_name(c.mode));
    EXPECT_EQ(stats[Collective::ReduceScatter].calls, units * accumulation) << mode;
    // + 1: the gradient norm's sum of squares, a double all-reduced as an all-gather of one
    // value per rank (all_reduce_scalar: summed in rank order, the same on every rank).
    EXPECT_EQ(stats[Collective::AllGather].calls, c.gathers_per_microbatch * accumulation + 1) << mode;
    EXPECT_EQ(mesh.dp_replicate().stats()[Collective::AllReduce].calls, 0) << mode;
  }
}

// HSDP and DDP: one all-reduce per unit per step across replicas, whatever the accumulation.
TEST(Hsdp, OneReplicaAllReducePerUnitPerStep) {
  if (test_world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const int64_t units = 8 + 2;
  for (int64_t replicas : {2, 4}) {
    config::JobConfig config = tiny_job("replica_counts", replicas, 4 / replicas, 2);
    config.training.steps = 1;
    Mesh mesh(mesh_shape_from_config(config.parallelism, 4), test_world());
    train::Trainer trainer(config, &mesh);
    mesh.reset_stats();
    trainer.train_step();
    EXPECT_EQ(mesh.dp_replicate().stats()[Collective::AllReduce].calls, units) << replicas;
    const int64_t reduce_scatters = mesh.dp_shard_cp().stats()[Collective::ReduceScatter].calls;
    EXPECT_EQ(reduce_scatters, replicas == 4 ? 0 : units * 2) << replicas;
  }
}

// Mixed precision (a bf16 compute dtype): the gather casts the f32 shards, so the bound whole
// values are the whole f32 tensors rounded to bf16; the whole gradients and their
// reduce-scatter stay f32.
TEST(Fsdp, Bf16ComputeDtypeGathersBf16ValuesAndReducesF32Gradients) {
  Communicator& world = test_world();
  const int64_t n = world.size();
  const nn::Placement placement = nn::fsdp_placement(world.rank(), n, Device::cpu(), DType::BF16);
  const nn::InitRule normal{nn::InitKind::Normal, 1.0, 0.0};
  nn::Parameter a("a.weight", {7, 3}, normal, placement), b("b.weight", {5}, normal, placement);
  a.initialize(11);
  b.initialize(11);
  SelfCommunicator replicas("replicate");
  FullyShardedDataParallel fsdp({nn::ParameterUnit{"unit", {&a, &b}}}, world, replicas,
                                config::ReshardAfterForward::Always);
  fsdp.before_forward(0);
  for (nn::Parameter* p : {&a, &b}) {
    ASSERT_EQ(p->value().dtype(), DType::BF16) << p->name();
    const Tensor whole = gather_parameter(*p, world);
    Tensor expected = Tensor::empty(whole.shape(), DType::BF16);
    ops::cast(whole, expected);
    EXPECT_EQ(std::memcmp(expected.raw_data(), p->value().raw_data(), size_t(expected.bytes())), 0)
        << p->name();
  }
  fsdp.after_forward(0);
  fsdp.before_backward(0);
  for (nn::Parameter* p : {&a, &b}) {
    ASSERT_EQ(p->grad().dtype(), DType::F32) << p->name();
    float* g = p->grad().mutable_data<float>();
    for (int64_t i = 0; i < p->grad().numel(); ++i) g[i] = 0.5f;
  }
  fsdp.after_backward(0);
  fsdp.reduce_gradients();
  for (nn::Parameter* p : {&a, &b}) {
    const float* g = p->shard_grad().data<float>();
    for (int64_t i = 0; i < p->shard_grad().numel(); ++i) {
      ASSERT_EQ(g[i], 0.5f * float(n)) << p->name() << " element " << i;
    }
  }
}

}  // namespace
}  // namespace titan::distributed

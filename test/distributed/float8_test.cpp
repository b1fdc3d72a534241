// Float8 linears on a mesh against one rank with Float8: FSDP 2 (gathering in high
// precision, and in float8 with scales per gather or precomputed once per step), TP 2 with
// sequence parallel, PP 2 and CP 2 train as one rank with Float8 does (check_layout says how
// close), since every amax is reduced over the ranks holding pieces of its operand
// (nn/float8.h). Every microbatch holds one sequence in every layout, so each amax covers
// the same tokens as one rank's. The communicator counters show what the float8 all-gather
// saves and how many amax all-reduces each scale mode makes. Run by CTest on 2 ranks, and
// on 4 for FSDP 2 x TP 2.
#include <gtest/gtest.h>

#include "distributed_test_main.h"
#include "tiny_training_job.h"
#include "training_run.h"
#include "titan/distributed/mesh.h"
#include "titan/train/trainer.h"

namespace titan::distributed {
namespace {

constexpr int64_t kGlobalBatch = 4;

struct Layout {
  std::string name;
  int64_t dp_shard = 1, tp = 1, pp = 1, cp = 1;
  std::optional<config::Float8Recipe> recipe;  // unset: tensorwise
  bool float8_all_gather = false, precompute = false;
  int64_t world() const { return dp_shard * tp * pp * cp; }
};

config::JobConfig float8_job(const Layout& layout) {
  config::JobConfig c = tiny_training_job("titan_float8_test_" + layout.name);
  c.model.converters = {"quantize.linear.float8"};
  config::LinearFloat8Section& f = c.quantize.linear.float8;
  f.recipe_name = layout.recipe;
  f.enable_fsdp_float8_all_gather = layout.float8_all_gather;
  f.precompute_float8_dynamic_scale_for_fsdp = layout.precompute;
  c.training.global_batch_size = kGlobalBatch;
  c.training.local_batch_size = layout.pp > 1 ? kGlobalBatch : 1;  // one sequence per microbatch
  c.parallelism.data_parallel_shard_degree = layout.dp_shard;
  c.parallelism.tensor_parallel_degree = layout.tp;
  c.parallelism.pipeline_parallel_degree = layout.pp;
  c.parallelism.pipeline_parallel_microbatch_size = 1;
  c.parallelism.context_parallel_degree = layout.cp;
  return c;
}

const TrainingRun& alone(std::optional<config::Float8Recipe> recipe) {
  static std::map<int, TrainingRun> runs;
  const int key = recipe ? int(*recipe) : -1;
  if (!runs.count(key)) runs[key] = train_run(float8_job({"alone", 1, 1, 1, 1, recipe}), nullptr);
  return runs.at(key);
}

// Step 1 (the same weights everywhere) within 1e-6: only the order of f32 sums differs, and
// it flips an fp8 rounding rarely (measured: <= 5e-8; a tp or cp amax left unreduced gives
// 8e-6 to 7e-5). Every step's loss and grad norm within 1e-4 (measured: <= 3e-5), and the
// parameters after 10 steps within 1e-2 in norm (measured: <= 5e-3; unreduced: 4e-2): Adam
// turns a flipped rounding of a near-zero gradient into a full-size update.
TrainingRun check_layout(const Layout& layout) {
  const config::JobConfig config = float8_job(layout);
  Mesh mesh(mesh_shape_from_config(config.parallelism, layout.world()), test_world());
  const TrainingRun run = train_run(config, &mesh);
  const TrainingRun& reference = alone(layout.recipe);
  EXPECT_EQ(run.steps.size(), size_t(kTinyTrainingSteps));
  if (run.steps.empty()) return run;
  const train::StepResult &first = run.steps[0], &want = reference.steps[0];
  EXPECT_NEAR(first.loss, want.loss, 1e-6 * want.loss);
  EXPECT_NEAR(first.grad_norm, want.grad_norm, 1e-6 * want.grad_norm);
  const RunDifference d = run_difference(run, reference);
  EXPECT_LE(d.loss, 1e-4);
  EXPECT_LE(d.grad_norm, 1e-4);
  EXPECT_LE(d.parameters, 1e-2);
  EXPECT_EQ(run.parameters.size(), reference.parameters.size());
  return run;
}

#define NEEDS_RANKS(n) \
  if (test_world().size() != (n)) GTEST_SKIP() << "needs " << (n) << " ranks"

// The float8 all-gather, with scales per gather or per step, gives exactly what gathering
// in high precision and casting after gives.
TEST(Float8, FsdpFloat8AllGatherEqualsGatheringInHighPrecision) {
  NEEDS_RANKS(2);
  const TrainingRun plain = check_layout({"fsdp2", 2});
  for (const bool precompute : {false, true}) {
    SCOPED_TRACE(precompute ? "precomputed scales" : "scales per gather");
    const TrainingRun run = check_layout({"fsdp2_f8", 2, 1, 1, 1, {}, true, precompute});
    const RunDifference d = run_difference(run, plain);
    EXPECT_EQ(d.loss, 0.0);
    EXPECT_EQ(d.grad_norm, 0.0);
    EXPECT_EQ(d.parameters, 0.0);
  }
}

// At 4 ranks: FSDP 2 x TP 2, where a gathered weight is the rank's tp piece and its scale
// needs the tp ranks' amaxes too.
TEST(Float8, FsdpFloat8AllGatherUnderTensorParallel) {
  NEEDS_RANKS(4);
  const TrainingRun plain = check_layout({"fsdp2_tp2", 2, 2});
  const TrainingRun run = check_layout({"fsdp2_tp2_f8", 2, 2, 1, 1, {}, true, true});
  const RunDifference d = run_difference(run, plain);
  EXPECT_EQ(d.loss, 0.0);
  EXPECT_EQ(d.parameters, 0.0);
}

TEST(Float8, TensorParallelWithSequenceParallelEqualsOneRank) {
  NEEDS_RANKS(2);
  check_layout({"tp2", 1, 2});
  check_layout({"tp2_rowwise", 1, 2, 1, 1, config::Float8Recipe::Rowwise});
}

TEST(Float8, PipelineParallelEqualsOneRank) {
  NEEDS_RANKS(2);
  check_layout({"pp2", 1, 1, 2});
}

TEST(Float8, ContextParallelEqualsOneRank) {
  NEEDS_RANKS(2);
  check_layout({"cp2", 1, 1, 1, 2});
}

// One step at FSDP 2 with every unit gathered once per microbatch (reshard never, 2
// microbatches): the float8 all-gather moves the converted weights in 1 byte instead of 4,
// exactly; its scales cost one amax all-reduce per layer gather, or one per step.
TEST(Float8, AllGatherMovesConvertedWeightsInOneByte) {
  NEEDS_RANKS(2);
  struct Counts {
    int64_t gather_bytes, all_reduces, float8_numel;
  };
  auto one_step = [](bool float8_all_gather, bool precompute) {
    Layout layout{"bytes", 2, 1, 1, 1, {}, float8_all_gather, precompute};
    config::JobConfig config = float8_job(layout);
    config.training.steps = 1;
    config.parallelism.fsdp_reshard_after_forward = config::ReshardAfterForward::Never;
    Mesh mesh(mesh_shape_from_config(config.parallelism, 2), test_world());
    train::Trainer trainer(config, &mesh);
    Communicator& group = mesh.tensor_dp_shard_cp();
    group.reset_stats();
    trainer.train();
    Counts counts{group.stats()[Collective::AllGather].bytes,
                  group.stats()[Collective::AllReduce].calls, 0};
    for (const nn::Parameter* p : trainer.model().parameters()) {
      if (p->float8()) counts.float8_numel += shape_numel(p->global_shape());
    }
    return counts;
  };
  const Counts plain = one_step(false, false), per_gather = one_step(true, false);
  const Counts per_step = one_step(true, true);
  const int64_t microbatches = kGlobalBatch / 2, layers = 8;
  ASSERT_EQ(plain.float8_numel, per_gather.float8_numel);
  EXPECT_GT(plain.float8_numel, 0);
  // Each rank's gather output holds every weight once: 4 - 1 bytes saved per element.
  EXPECT_EQ(plain.gather_bytes - per_gather.gather_bytes,
            microbatches * 3 * plain.float8_numel);
  EXPECT_EQ(per_step.gather_bytes, per_gather.gather_bytes);
  EXPECT_EQ(per_gather.all_reduces - plain.all_reduces, microbatches * layers);
  EXPECT_EQ(per_step.all_reduces - plain.all_reduces, 1);
}

}  // namespace
}  // namespace titan::distributed

// Pipeline parallelism against one rank: every schedule at pp 2 and pp 4 (each at the
// microbatch counts in {pp, 2 pp} it accepts), a schedule read from CSV, the split backward
// against the fused one, validation, PP composed with FSDP and with TP + FSDP, and
// checkpoints that move between pp 2 and FSDP. The same global batch gives the same losses,
// grad norms and final parameters as one rank. Run by CTest under mpirun on 2, 4 and 8
// ranks (test/CMakeLists.txt); each layout runs once, and every rank also trains the
// one-rank reference on its own.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "distributed_test_main.h"
#include "support/gradient_check.h"
#include "tiny_training_job.h"
#include "training_run.h"
#include "titan/build_config.h"
#include "titan/distributed/mesh.h"
#include "titan/models/registry.h"
#include "titan/train/trainer.h"

namespace titan::train {
namespace {

namespace fs = std::filesystem;
using config::PipelineSchedule;
using distributed::Mesh;

struct Layout {
  std::string name;
  int64_t pp = 2, dp_shard = 1, tp = 1;
  PipelineSchedule schedule = PipelineSchedule::OneForwardOneBackward;
  int64_t microbatches = 2;  // per local batch
  // Activation checkpointing; unset: the config's default (selective, every second block).
  std::optional<config::ActivationCheckpointSection> ac;
  int64_t world() const { return pp * dp_shard * tp; }
};

// The global batch is 2 x pp rows, so pp 2 and pp 4 both find microbatch counts of pp and
// 2 pp in one local batch.
config::JobConfig pipeline_job(const Layout& layout, int64_t global_batch) {
  config::JobConfig c = tiny_training_job("titan_pp_test_" + layout.name);
  c.training.global_batch_size = global_batch;
  c.training.local_batch_size = global_batch / layout.dp_shard;
  c.parallelism.data_parallel_shard_degree = layout.dp_shard;
  c.parallelism.tensor_parallel_degree = layout.tp;
  c.parallelism.pipeline_parallel_degree = layout.pp;
  c.parallelism.pipeline_parallel_schedule = layout.schedule;
  c.parallelism.pipeline_parallel_microbatch_size =
      c.training.local_batch_size / layout.microbatches;
  if (layout.ac) c.activation_checkpoint = *layout.ac;
  return c;
}

// One rank on the same global batch, once per batch size.
const TrainingRun& alone(int64_t global_batch) {
  // Never destroyed: its tensors must not outlive the allocator at exit.
  static auto& runs = *new std::map<int64_t, TrainingRun>;
  if (!runs.count(global_batch)) {
    config::JobConfig c = tiny_training_job("titan_pp_test_alone" + std::to_string(global_batch));
    c.training.global_batch_size = global_batch;
    c.training.local_batch_size = global_batch;
    runs[global_batch] = train_run(c, nullptr);
  }
  return runs.at(global_batch);
}

void check_layout(const Layout& layout, int64_t global_batch) {
  SCOPED_TRACE(layout.name);
  const config::JobConfig config = pipeline_job(layout, global_batch);
  Mesh mesh(distributed::mesh_shape_from_config(config.parallelism, layout.world()),
            test_world());
  expect_same_run(train_run(config, &mesh), alone(global_batch));
}

// Every schedule at pp = the world (2 or 4), at microbatch counts pp and 2 pp where it
// takes them (DualPipeV needs 2 pp).
void check_every_schedule(int64_t pp) {
  if (test_world().size() != pp) GTEST_SKIP() << "needs " << pp << " ranks";
  const std::pair<PipelineSchedule, const char*> schedules[] = {
      {PipelineSchedule::GPipe, "gpipe"},
      {PipelineSchedule::OneForwardOneBackward, "1f1b"},
      {PipelineSchedule::Interleaved1F1B, "interleaved1f1b"},
      {PipelineSchedule::LoopedBFS, "loopedbfs"},
      {PipelineSchedule::InterleavedZeroBubble, "interleavedzb"},
      {PipelineSchedule::ZBVZeroBubble, "zbv"},
      {PipelineSchedule::DualPipeV, "dualpipev"},
  };
  for (const auto& [schedule, name] : schedules) {
    for (const int64_t m : {pp, 2 * pp}) {
      if (schedule == PipelineSchedule::DualPipeV && m < 2 * pp) continue;
      Layout layout{std::string(name) + "_pp" + std::to_string(pp) + "_m" + std::to_string(m),
                    pp};
      layout.schedule = schedule;
      layout.microbatches = m;
      check_layout(layout, 2 * pp);
    }
  }
}

TEST(Pipeline, EverySchedulePp2EqualsOneRank) { check_every_schedule(2); }
TEST(Pipeline, EverySchedulePp4EqualsOneRank) { check_every_schedule(4); }

TEST(Pipeline, FsdpTwoByPpTwo) {
  if (test_world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  Layout layout{"pp2_fsdp2", 2, 2};
  layout.schedule = PipelineSchedule::InterleavedZeroBubble;  // split backward under FSDP
  check_layout(layout, 8);
}

// Under PP the schedule's UNSHARD and REDUCE_GRAD drive FSDP: each unit is gathered once
// and reduce-scattered once per batch, however many microbatches pass through it.
TEST(Pipeline, FsdpGathersAndReducesEachUnitOncePerBatch) {
  if (test_world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  Layout layout{"pp2_fsdp2_counts", 2, 2};
  layout.schedule = PipelineSchedule::Interleaved1F1B;
  layout.microbatches = 4;
  const config::JobConfig config = pipeline_job(layout, 8);
  Mesh mesh(distributed::mesh_shape_from_config(config.parallelism, 4), test_world());
  Trainer trainer(config, &mesh);
  distributed::Communicator& shards = mesh.tensor_dp_shard_cp();
  shards.reset_stats();
  trainer.train_step();
  const int64_t units = int64_t(trainer.model().units().size());
  EXPECT_EQ(shards.stats()[distributed::Collective::ReduceScatter].calls, units);
  // One more all-gather: the grad norm's scalar (all_reduce_scalar gathers the doubles).
  EXPECT_EQ(shards.stats()[distributed::Collective::AllGather].calls, units + 1);
}

TEST(Pipeline, TpTwoByPpTwo) {
  if (test_world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  check_layout({"pp2_tp2", 2, 1, 2}, 4);
}

TEST(Pipeline, PpTwoByFsdpTwoByTpTwo) {
  if (test_world().size() != 8) GTEST_SKIP() << "needs 8 ranks";
  Layout layout{"pp2_fsdp2_tp2", 2, 2, 2};
  layout.schedule = PipelineSchedule::Interleaved1F1B;
  check_layout(layout, 8);
}

config::ActivationCheckpointSection checkpointing(config::ActivationCheckpointMode mode,
                                                  const std::string& option = "2") {
  config::ActivationCheckpointSection ac;
  ac.mode = mode;
  ac.selective_ac_option = option;
  return ac;
}

// Recomputing blocks changes no result: full recompute under the split backward of ZBV,
// per-op recompute under 1F1B, and per-op recompute under TP (gathered copies kept).
TEST(Pipeline, ActivationCheckpointingUnderPipelines) {
  if (test_world().size() == 2) {
    Layout zbv{"ac_full_zbv"};
    zbv.schedule = PipelineSchedule::ZBVZeroBubble;
    zbv.microbatches = 4;
    zbv.ac = checkpointing(config::ActivationCheckpointMode::Full);
    check_layout(zbv, 4);
    Layout op{"ac_op_1f1b"};
    op.ac = checkpointing(config::ActivationCheckpointMode::Selective, "op");
    check_layout(op, 4);
  } else if (test_world().size() == 4) {
    Layout tp{"ac_op_pp2_tp2", 2, 1, 2};
    tp.ac = checkpointing(config::ActivationCheckpointMode::Selective, "op");
    check_layout(tp, 4);
  } else {
    GTEST_SKIP() << "needs 2 or 4 ranks";
  }
}

// A CSV schedule (two stages per rank): once with full backwards, once with each split
// into I and W right away; the split backward gives bitwise the fused one's results.
TEST(Pipeline, CsvScheduleAndSplitBackward) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const std::string fused =
      "0F0,0F1,2F0,2F1,2B0,2B1,0B0,0B1\n"
      "1F0,1F1,3F0,3B0,3F1,3B1,1B0,1B1\n";
  const std::string split =
      "0F0,0F1,2F0,2F1,2I0,2W0,2I1,2W1,0I0,0W0,0I1,0W1\n"
      "1F0,1F1,3F0,3I0,3W0,3F1,3I1,3W1,1I0,1W0,1I1,1W1\n";
  std::vector<TrainingRun> runs;
  for (const std::string& text : {fused, split}) {
    const fs::path csv = fs::temp_directory_path() /
                         ("titan_pp_test_schedule" + std::to_string(runs.size()) + "_rank" +
                          std::to_string(test_world().rank()) + ".csv");
    std::ofstream(csv) << text;
    Layout layout{"csv" + std::to_string(runs.size())};
    layout.schedule = PipelineSchedule::PipelineScheduleMulti;
    config::JobConfig config = pipeline_job(layout, 4);
    config.parallelism.pipeline_parallel_schedule_csv = csv.string();
    Mesh mesh(distributed::mesh_shape_from_config(config.parallelism, 2), test_world());
    runs.push_back(train_run(config, &mesh));
  }
  expect_same_run(runs[0], alone(4));
  for (size_t s = 0; s < runs[0].steps.size(); ++s) {
    EXPECT_EQ(runs[1].steps[s].loss, runs[0].steps[s].loss) << "step " << s + 1;
    EXPECT_EQ(runs[1].steps[s].grad_norm, runs[0].steps[s].grad_norm) << "step " << s + 1;
  }
}

// Validation runs forward only through the stages: the loss over the same windows is one
// rank's, at pp 2 and at pp 2 x FSDP 2 (each stage's units gathered, then freed again).
TEST(Pipeline, ValidationEqualsOneRank) {
  const int64_t world = test_world().size();
  if (world != 2 && world != 4) GTEST_SKIP() << "needs 2 or 4 ranks";
  const Layout layout{"validation_pp2_dp" + std::to_string(world / 2), 2, world / 2};
  const config::JobConfig config =
      with_validation(pipeline_job(layout, 4), 4 / layout.dp_shard);
  Mesh mesh(distributed::mesh_shape_from_config(config.parallelism, world), test_world());
  Trainer pp(config, &mesh);
  pp.train();
  config::JobConfig one = tiny_training_job("titan_pp_test_validation_alone");
  one.training.global_batch_size = one.training.local_batch_size = 4;
  Trainer alone_trainer(with_validation(one, 4));
  alone_trainer.train();
  const ValidationResult a = alone_trainer.validate(), b = pp.validate();
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NEAR(b.loss, a.loss, 1e-5 * a.loss);
}

// fsdp_reshard_after_forward `always` under PP frees each unit's values after every
// forward, keeps the whole gradients, and keeps the values a split backward's W still
// reads: the same run.
TEST(Pipeline, FsdpReshardAfterForwardAlways) {
  if (test_world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  Layout layout{"pp2_fsdp2_always", 2, 2};
  layout.schedule = PipelineSchedule::InterleavedZeroBubble;
  config::JobConfig config = pipeline_job(layout, 8);
  config.parallelism.fsdp_reshard_after_forward = config::ReshardAfterForward::Always;
  Mesh mesh(distributed::mesh_shape_from_config(config.parallelism, 4), test_world());
  expect_same_run(train_run(config, &mesh), alone(8));
}

#if TITAN_HAVE_HDF5
// A checkpoint saved at step 5 at pp 2 resumes with FSDP 2, and the reverse; steps 6..10
// have the uninterrupted one-rank run's losses.
TEST(Pipeline, CheckpointsMoveBetweenPipelineAndFsdp) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const Layout pp2{"ckpt_pp2"}, fsdp2{"ckpt_fsdp2", 1, 2};
  int index = 0;
  for (const auto& [save, resume] : {std::pair{pp2, fsdp2}, std::pair{fsdp2, pp2}}) {
    SCOPED_TRACE(save.name + " -> " + resume.name);
    const fs::path folder = fs::temp_directory_path() / ("titan_pp_test_ckpt" +
                                                         std::to_string(index++));
    if (test_world().rank() == 0) fs::remove_all(folder);
    test_world().barrier().wait();
    auto checkpointed = [&](const Layout& layout) {
      config::JobConfig c = pipeline_job(layout, 4);
      c.job.dump_folder = folder.string();
      c.checkpoint.enable = true;
      c.checkpoint.interval = 5;
      return c;
    };
    {
      const config::JobConfig c = checkpointed(save);
      Mesh mesh(distributed::mesh_shape_from_config(c.parallelism, 2), test_world());
      Trainer trainer(c, &mesh);
      for (int s = 0; s < 5; ++s) trainer.train_step();
    }
    const config::JobConfig c = checkpointed(resume);
    Mesh mesh(distributed::mesh_shape_from_config(c.parallelism, 2), test_world());
    Trainer resumed(c, &mesh);
    const std::vector<StepResult> steps = resumed.train();
    ASSERT_EQ(steps.size(), 5u);
    for (size_t s = 0; s < steps.size(); ++s) {
      const StepResult& want = alone(4).steps[s + 5];
      EXPECT_EQ(steps[s].step, want.step);
      EXPECT_NEAR(steps[s].loss, want.loss, 1e-5 * want.loss) << "step " << want.step;
    }
  }
}
#endif

}  // namespace
}  // namespace titan::train

// DeepSeek V3 (latent attention, a mixture of experts with load balancing) on a mesh against
// one rank: FSDP 2 (the experts' weights sharded by expert), DDP 2, context parallel 2,
// pipeline parallel 2 and expert parallel 2 train the tiny flavor as one rank does, every
// step's loss and grad norm and every parameter within 1e-5 (expect_same_run), and route
// the same: each step's expert load imbalance and worst layer equal one rank's, which needs
// the experts' counts summed over the data-parallel and context-parallel ranks before the
// biases move (without it each rank's biases follow its own tokens and the runs part from
// step 2). Every layout sees the same 4 sequences a step. At 4 ranks: PP 2 x FSDP 2, EP 2 on
// dp_shard 4 (the experts' FSDP over 2), EP 4 over dp_shard 2 x CP 2, PP 2 x EP 2. TP 2
// with and without sequence parallelism (the latent attention's heads split, the MoE on the
// rank's rows), EP over the tp ranks (EP 2 x TP 2 on 2 ranks, EP 4 over FSDP 2 x TP 2),
// expert tensor parallelism (TP 2 with and without SP; EP 2 x ETP 2 over FSDP 2 x TP 2).
// Expert parallelism that does not split: exit 2 naming the key.
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
  int64_t dp_shard = 1, dp_replicate = 1, cp = 1, pp = 1, ep = 1, tp = 1;
  bool sequence_parallel = true;
  int64_t etp = 1;  // expert_tensor_parallel_degree
  int64_t world() const { return dp_shard * dp_replicate * cp * pp * tp; }
};

config::JobConfig deepseek_job(const Layout& layout) {
  config::JobConfig c = tiny_training_job("titan_deepseek_v3_test_" + layout.name);
  c.model.name = "deepseek_v3";
  c.training.global_batch_size = kGlobalBatch;
  c.training.local_batch_size = kGlobalBatch / (layout.dp_shard * layout.dp_replicate);
  c.parallelism.data_parallel_shard_degree = layout.dp_shard;
  c.parallelism.data_parallel_replicate_degree = layout.dp_replicate;
  c.parallelism.context_parallel_degree = layout.cp;
  c.parallelism.pipeline_parallel_degree = layout.pp;
  c.parallelism.expert_parallel_degree = layout.ep;
  c.parallelism.tensor_parallel_degree = layout.tp;
  c.parallelism.enable_sequence_parallel = layout.sequence_parallel;
  c.parallelism.expert_tensor_parallel_degree = layout.etp;
  c.parallelism.pipeline_parallel_microbatch_size = 1;
  c.parallelism.pipeline_parallel_schedule = config::PipelineSchedule::OneForwardOneBackward;
  return c;
}

const TrainingRun& alone() {
  static const TrainingRun run = train_run(deepseek_job({"alone"}), nullptr);
  return run;
}

void check_layout(const Layout& layout) {
  SCOPED_TRACE(layout.name);
  const config::JobConfig config = deepseek_job(layout);
  Mesh mesh(mesh_shape_from_config(config.parallelism, layout.world()), test_world());
  const TrainingRun run = train_run(config, &mesh);
  const TrainingRun& reference = alone();
  expect_same_run(run, reference);
  if (layout.ep > 1) {  // the tokens did travel: 5 exchanges per MoE layer and microbatch
    EXPECT_EQ(mesh.ep().size(), layout.ep);
    const int64_t spanned = layout.dp_shard * layout.cp * (layout.etp > 1 ? 1 : layout.tp);
    EXPECT_EQ(mesh.efsdp().size(), spanned / layout.ep);
    EXPECT_GT(mesh.ep().stats()[Collective::AllToAll].calls, 0);
  }
  ASSERT_EQ(run.steps.size(), reference.steps.size());
  for (size_t s = 0; s < run.steps.size(); ++s) {
    ASSERT_TRUE(run.steps[s].moe_load_imbalance.has_value()) << "step " << s + 1;
    EXPECT_EQ(*run.steps[s].moe_load_imbalance, *reference.steps[s].moe_load_imbalance)
        << "step " << s + 1;
    EXPECT_EQ(run.steps[s].moe_worst_layer, reference.steps[s].moe_worst_layer)
        << "step " << s + 1;
  }
}

#define NEEDS_RANKS(n) \
  if (test_world().size() != (n)) GTEST_SKIP() << "needs " << (n) << " ranks"

TEST(DeepSeekV3, DataParallelLayoutsRouteAndTrainAsOneRank) {
  NEEDS_RANKS(2);
  check_layout({"fsdp2", 2});
  check_layout({"ddp2", 1, 2});
}

TEST(DeepSeekV3, ContextAndPipelineParallelTrainAsOneRank) {
  NEEDS_RANKS(2);
  check_layout({"cp2", 1, 1, 2});
  check_layout({"pp2", 1, 1, 1, 2});
}

TEST(DeepSeekV3, PipelineTimesFsdpTrainsAsOneRank) {
  NEEDS_RANKS(4);
  check_layout({"pp2_fsdp2", 2, 1, 1, 2});
}

TEST(DeepSeekV3, ExpertParallelTrainsAsOneRank) {
  NEEDS_RANKS(2);
  check_layout({"ep2", 2, 1, 1, 1, 2});
}

TEST(DeepSeekV3, ExpertParallelWithTheExpertsFsdpContextAndPipeline) {
  NEEDS_RANKS(4);
  check_layout({"ep2_efsdp2", 4, 1, 1, 1, 2});
  check_layout({"ep4_cp2", 2, 1, 2, 1, 4});
  check_layout({"pp2_ep2", 2, 1, 1, 2, 2});
}

TEST(DeepSeekV3, ExpertParallelismThatDoesNotSplitIsRefusedNamingTheKey) {
  NEEDS_RANKS(2);
  // 8 experts over 3; then 4 expert-parallel ranks out of 2 dp_shard ranks.
  for (const auto& [ep, what] : {std::pair<int64_t, const char*>{3, "experts of flavor tiny"},
                                 std::pair<int64_t, const char*>{4, "dp_shard x context"}}) {
    config::JobConfig config = deepseek_job({"ep_bad", 2});
    config.parallelism.expert_parallel_degree = ep;
    Mesh mesh(mesh_shape_from_config(config.parallelism, 2), test_world());
    try {
      train::Trainer trainer(config, &mesh);
      ADD_FAILURE() << "no error for ep " << ep;
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("parallelism.expert_parallel_degree " + std::to_string(ep)),
                std::string::npos) << message;
      EXPECT_NE(message.find(what), std::string::npos) << message;
    }
  }
}

TEST(DeepSeekV3, TensorParallelTrainsAsOneRank) {
  NEEDS_RANKS(2);
  check_layout({"tp2_sp", 1, 1, 1, 1, 1, 2});
  check_layout({"tp2", 1, 1, 1, 1, 1, 2, false});
  check_layout({"tp2_ep2", 1, 1, 1, 1, 2, 2});  // EP over the tp ranks
}

// Expert tensor parallelism: the experts' hidden dim split over tp, every tp rank routing
// all the tokens; with and without sequence parallelism.
TEST(DeepSeekV3, ExpertTensorParallelTrainsAsOneRank) {
  NEEDS_RANKS(2);
  check_layout({"tp2_sp_etp2", 1, 1, 1, 1, 1, 2, true, 2});
  check_layout({"tp2_etp2", 1, 1, 1, 1, 1, 2, false, 2});
}

// torchtitan's EP without expert tensor parallelism: the ep groups span tp.
TEST(DeepSeekV3, ExpertParallelOverTensorParallelRanks) {
  NEEDS_RANKS(4);
  check_layout({"fsdp2_tp2_ep4", 2, 1, 1, 1, 4, 2});
}

// With expert tensor parallelism ep leaves tp out: EP 2 over dp_shard 2, experts split by TP 2.
TEST(DeepSeekV3, ExpertParallelTimesExpertTensorParallel) {
  NEEDS_RANKS(4);
  check_layout({"fsdp2_tp2_ep2_etp2", 2, 1, 1, 1, 2, 2, true, 2});
}

}  // namespace
}  // namespace titan::distributed

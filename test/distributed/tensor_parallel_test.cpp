// Tensor parallelism against one rank: tp alone (with and without sequence parallel, with
// gathered logits, asynchronous) and composed with FSDP, HSDP: the same global batch gives
// the same losses, grad norms and final parameters as one rank; the communicator counters
// show the layout's collectives and that loss parallel never moves the logits. Run by
// CTest under mpirun on 2, 4 and 8 ranks (test/CMakeLists.txt); each layout runs once and
// every rank also trains the one-rank reference on its own.
#include <gtest/gtest.h>

#include <filesystem>

#include "distributed_test_main.h"
#include "support/gradient_check.h"
#include "support/train_process.h"
#include "titan/distributed/mesh.h"
#include "titan/distributed/tensor_parallel.h"
#include "titan/train/trainer.h"

namespace titan::distributed {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kSteps = 10;
constexpr int64_t kGlobalBatch = 4;

struct Layout {
  std::string name;
  int64_t dp_replicate = 1, dp_shard = 1, tp = 1;
  bool sequence_parallel = true, loss_parallel = true, async = false;
  int64_t world() const { return dp_replicate * dp_shard * tp; }
};

config::JobConfig tiny_job(const Layout& layout) {
  config::JobConfig c;
  const fs::path dump = fs::temp_directory_path() / ("titan_tp_test_" + layout.name + "_rank" +
                                                     std::to_string(test_world().rank()));
  fs::remove_all(dump);
  c.job.dump_folder = dump.string();
  c.model.flavor = "tiny";
  c.training.dataset = "sotu";
  c.training.dataset_path = testing::assets_path("data/sotu");
  c.training.seq_len = 64;
  c.training.global_batch_size = kGlobalBatch;
  c.training.local_batch_size = kGlobalBatch / (layout.dp_replicate * layout.dp_shard);
  c.training.steps = kSteps;
  c.lr_scheduler.warmup_steps = 3;
  c.metrics.log_freq = 5;
  c.metrics.peak_tflops = 1.0;  // skip the start-up sgemm measurement
  c.parallelism.data_parallel_replicate_degree = layout.dp_replicate;
  c.parallelism.data_parallel_shard_degree = layout.dp_shard;
  c.parallelism.tensor_parallel_degree = layout.tp;
  c.parallelism.enable_sequence_parallel = layout.sequence_parallel;
  c.parallelism.disable_loss_parallel = !layout.loss_parallel;
  c.parallelism.enable_async_tensor_parallel = layout.async;
  return c;
}

struct Run {
  std::vector<train::StepResult> steps;
  std::vector<std::string> names;
  std::vector<Tensor> parameters;  // whole
};

// The whole tensor from every rank's box: the first holder of each box writes it into a
// zero tensor and the world sums them (each element written once, so the sum is exact).
Tensor gather_whole(const nn::Parameter& p, Communicator& world) {
  Tensor whole = Tensor::zeros(p.global_shape(), DType::F32);
  if (p.placement().writes_checkpoint()) {
    const float* piece = p.shard().data<float>();
    float* out = whole.mutable_data<float>();
    nn::for_each_box_run(p.global_shape(), p.local_box(),
                         [&](int64_t global, int64_t local, int64_t length) {
                           std::copy_n(piece + local, length, out + global);
                         });
  }
  world.all_reduce(whole).wait();
  return whole;
}

Run train(const config::JobConfig& config, Mesh* mesh) {
  train::Trainer trainer(config, mesh);
  Run run;
  run.steps = trainer.train();
  for (nn::Parameter* p : trainer.model().parameters()) {
    run.names.push_back(p->name());
    run.parameters.push_back(mesh ? gather_whole(*p, mesh->world()) : p->shard());
  }
  return run;
}

const Run& alone() {
  static const Run run = [] {
    Layout one{"alone"};
    one.sequence_parallel = false;
    return train(tiny_job(one), nullptr);
  }();
  return run;
}

void check_layout(const Layout& layout) {
  if (test_world().size() != layout.world()) GTEST_SKIP() << "needs " << layout.world() << " ranks";
  const config::JobConfig config = tiny_job(layout);
  Mesh mesh(mesh_shape_from_config(config.parallelism, layout.world()), test_world());
  const Run run = train(config, &mesh);
  const Run& reference = alone();
  ASSERT_EQ(run.steps.size(), size_t(kSteps));
  for (size_t s = 0; s < run.steps.size(); ++s) {
    const train::StepResult& want = reference.steps[s];
    EXPECT_NEAR(run.steps[s].loss, want.loss, 1e-5 * want.loss) << "step " << s + 1;
    EXPECT_NEAR(run.steps[s].grad_norm, want.grad_norm, 1e-5 * want.grad_norm)
        << "step " << s + 1;
  }
  ASSERT_EQ(run.names, reference.names);
  for (size_t i = 0; i < reference.parameters.size(); ++i) {
    testing::expect_close(testing::to_values(run.parameters[i]),
                          testing::to_values(reference.parameters[i]), 1e-5,
                          reference.names[i]);
  }
}

TEST(TensorParallel, Tp2EqualsOneRank) { check_layout({"tp2", 1, 1, 2}); }

TEST(TensorParallel, Tp2WithoutSequenceParallel) {
  Layout layout{"tp2_nosp", 1, 1, 2};
  layout.sequence_parallel = false;
  check_layout(layout);
}

TEST(TensorParallel, Tp2WithGatheredLogits) {
  Layout layout{"tp2_nolp", 1, 1, 2};
  layout.loss_parallel = false;
  check_layout(layout);
}

TEST(TensorParallel, AsyncTp2) {
  Layout layout{"tp2_async", 1, 1, 2};
  layout.async = true;
  check_layout(layout);
}

// tiny has 2 kv heads: tp 4 shares each kv head between two ranks.
TEST(TensorParallel, Tp4SharesKvHeads) { check_layout({"tp4", 1, 1, 4}); }

TEST(TensorParallel, FsdpTwoByTpTwo) { check_layout({"fsdp2_tp2", 1, 2, 2}); }

TEST(TensorParallel, HsdpTwoByFsdpTwoByTpTwo) { check_layout({"hsdp_tp", 2, 2, 2}); }

}  // namespace
}  // namespace titan::distributed

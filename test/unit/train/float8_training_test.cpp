// Float8 training on one rank: the debug model trains with each recipe as float32 training
// does (finite, falling losses within 3% of float32's at every step), a checkpoint of a
// Float8 run resumes without Float8 (weights are stored in high precision), and a GPU
// without fp8 tensor cores must ask for the emulation.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "support/gradient_check.h"
#include "support/train_process.h"
#include "titan/build_config.h"
#include "titan/ops/float8_gemm.h"
#include "titan/train/trainer.h"

namespace titan::train {
namespace {

namespace fs = std::filesystem;

config::JobConfig debug_job(const std::string& name, std::optional<config::Float8Recipe> recipe,
                            bool float8) {
  config::JobConfig c;
  const fs::path dump = fs::temp_directory_path() / ("titan_float8_training_" + name);
  fs::remove_all(dump);
  c.job.dump_folder = dump.string();
  c.model.flavor = "debugmodel";
  c.training.dataset = "sotu";
  c.training.dataset_path = testing::assets_path("data/sotu");
  c.training.seq_len = 128;
  c.training.local_batch_size = 4;
  c.training.steps = 10;
  c.lr_scheduler.warmup_steps = 2;
  c.metrics.log_freq = 5;
  c.metrics.peak_tflops = 1.0;  // skip the start-up sgemm measurement
  c.activation_checkpoint.mode = config::ActivationCheckpointMode::None;
  if (float8) c.model.converters = {"quantize.linear.float8"};
  c.quantize.linear.float8.recipe_name = recipe;
  return c;
}

TEST(Float8Training, EachRecipeTracksFloat32OnTheDebugModel) {
  const std::vector<StepResult> f32 = Trainer(debug_job("f32", {}, false)).train();
  ASSERT_EQ(f32.size(), 10u);
  const std::optional<config::Float8Recipe> recipes[] = {
      std::nullopt, config::Float8Recipe::Rowwise, config::Float8Recipe::RowwiseWithGwHp};
  for (const auto& recipe : recipes) {
    const std::string name(recipe ? config::choice_name(*recipe) : "tensorwise");
    SCOPED_TRACE(name);
    Trainer trainer(debug_job(name, recipe, true));
    int64_t converted = 0;
    for (const nn::Parameter* p : trainer.model().parameters()) converted += p->float8();
    EXPECT_EQ(converted, 6 * 7);  // every layer linear of the debug model's 6 layers
    const std::vector<StepResult> steps = trainer.train();
    ASSERT_EQ(steps.size(), f32.size());
    double largest = 0;
    for (size_t s = 0; s < steps.size(); ++s) {
      ASSERT_TRUE(std::isfinite(steps[s].loss) && std::isfinite(steps[s].grad_norm));
      const double relative = std::fabs(steps[s].loss - f32[s].loss) / f32[s].loss;
      EXPECT_LE(relative, 0.03) << "step " << s + 1;
      largest = std::max(largest, relative);
    }
    EXPECT_LT(steps.back().loss, steps.front().loss - 0.5);  // it learns (f32: 8.13 to 7.45)
    EXPECT_GT(largest, 0.0);  // and the GEMMs were cast
  }
}

#if TITAN_HAVE_HDF5
TEST(Float8Training, ACheckpointOfAFloat8RunResumesWithoutFloat8) {
  config::JobConfig job = debug_job("checkpoint", {}, true);
  job.training.steps = 2;
  job.checkpoint.enable = true;
  job.checkpoint.interval = 2;
  job.checkpoint.last_save_model_only = false;
  std::vector<testing::Values> saved;
  {
    Trainer trainer(job);
    trainer.train();
    for (nn::Parameter* p : trainer.model().parameters()) {
      saved.push_back(testing::to_values(p->shard()));
    }
  }
  job.model.converters.clear();
  job.training.steps = 3;
  Trainer resumed(job);  // loads step 2 from the dump folder
  EXPECT_EQ(resumed.step(), 2);
  std::vector<testing::Values> loaded;
  for (nn::Parameter* p : resumed.model().parameters()) {
    EXPECT_FALSE(p->float8()) << p->name();
    loaded.push_back(testing::to_values(p->shard()));
  }
  EXPECT_EQ(loaded, saved);
  const std::vector<StepResult> steps = resumed.train();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_TRUE(std::isfinite(steps[0].loss));
}
#endif

// A GPU multiplies on its fp8 tensor cores; one without them (or none here: the check
// cannot find it) must ask for the emulation, else exit 2 naming the key.
TEST(Float8Training, AGpuWithoutFp8TensorCoresMustAskForTheEmulation) {
  config::JobConfig job = debug_job("gpu", {}, true);
  const std::optional<nn::Float8Training> cpu = float8_training_for(job, Device::cpu());
  ASSERT_TRUE(cpu.has_value());
  EXPECT_TRUE(cpu->emulate);
  if (ops::float8_gemm_supported(Device::cuda(0))) {
    EXPECT_FALSE(float8_training_for(job, Device::cuda(0))->emulate);
  } else {
    try {
      float8_training_for(job, Device::cuda(0));
      ADD_FAILURE() << "no InputError";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("quantize.linear.float8.emulate"), std::string::npos);
    }
  }
  job.quantize.linear.float8.emulate = true;
  EXPECT_TRUE(float8_training_for(job, Device::cuda(0))->emulate);
  job.model.converters.clear();
  EXPECT_FALSE(float8_training_for(job, Device::cpu()).has_value());
}

}  // namespace
}  // namespace titan::train

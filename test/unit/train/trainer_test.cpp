#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "support/gradient_check.h"
#include "support/train_process.h"
#include "titan/build_config.h"
#include "titan/core/threads.h"
#include "titan/data/synthetic.h"
#include "titan/train/trainer.h"

namespace titan::train {
namespace {

namespace fs = std::filesystem;

fs::path fresh_folder(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("titan_trainer_test_" + name);
  fs::remove_all(dir);
  return dir;
}

config::JobConfig tiny_job(const std::string& name) {
  config::JobConfig c;
  c.job.dump_folder = fresh_folder(name).string();
  c.model.flavor = "tiny";
  c.training.dataset = "synthetic";
  c.training.seq_len = 32;
  c.training.local_batch_size = 2;
  c.training.steps = 3;
  c.lr_scheduler.warmup_steps = 2;
  c.metrics.log_freq = 1;
  c.metrics.peak_tflops = 1.0;  // skip the start-up sgemm measurement
  c.activation_checkpoint.mode = config::ActivationCheckpointMode::None;
  return c;
}

std::vector<testing::Values> weights_of(Trainer& trainer) {
  std::vector<testing::Values> w;
  for (nn::Parameter* p : trainer.model().parameters()) w.push_back(testing::to_values(p->value()));
  return w;
}

TEST(Trainer, TwoRunsOfOneConfigAreBitwiseIdentical) {
  std::vector<std::vector<StepResult>> results;
  std::vector<std::vector<testing::Values>> weights;
  for (int run = 0; run < 2; ++run) {
    Trainer trainer(tiny_job("repeat" + std::to_string(run)));
    results.push_back(trainer.train());
    weights.push_back(weights_of(trainer));
  }
  ASSERT_EQ(results[0].size(), 3u);
  for (size_t s = 0; s < 3; ++s) {
    EXPECT_EQ(results[0][s].loss, results[1][s].loss) << "step " << s + 1;
    EXPECT_EQ(results[0][s].grad_norm, results[1][s].grad_norm) << "step " << s + 1;
  }
  EXPECT_EQ(weights[0], weights[1]);
}

// Four microbatches of B sequences and one of 4B see the same tokens (the synthetic source
// numbers sequences globally) and the same token-mean loss.
TEST(Trainer, FourMicrobatchesOfBEqualOneBatchOf4B) {
  config::JobConfig accumulated = tiny_job("accumulated");
  accumulated.training.local_batch_size = 1;
  accumulated.training.global_batch_size = 4;
  config::JobConfig whole = tiny_job("whole");
  whole.training.local_batch_size = 4;
  Trainer a(accumulated), b(whole);
  EXPECT_EQ(a.accumulation_steps(), 4);
  EXPECT_EQ(b.accumulation_steps(), 1);
  const std::vector<StepResult> ra = a.train(), rb = b.train();
  for (size_t s = 0; s < ra.size(); ++s) {
    EXPECT_NEAR(ra[s].loss, rb[s].loss, 1e-5 * rb[s].loss) << "step " << s + 1;
    EXPECT_NEAR(ra[s].grad_norm, rb[s].grad_norm, 1e-5 * rb[s].grad_norm) << "step " << s + 1;
  }
  const auto wa = weights_of(a), wb = weights_of(b);
  for (size_t i = 0; i < wa.size(); ++i) {
    testing::expect_close(wa[i], wb[i], 1e-5, a.model().parameters()[i]->name());
  }
}

// The pieces of a step (forward, backward, norm, clipping, AdamW) learn: one batch seen
// again and again is memorised, its loss falling far below ln V (7.62).
TEST(Trainer, ModelMemorisesOneBatch) {
  config::JobConfig c = tiny_job("memorise");
  c.optimizer.lr = 3e-3;
  Trainer trainer(c);  // for its model and synthetic data; stepped by hand below
  models::Model& model = trainer.model();
  const std::vector<nn::Parameter*> params = model.parameters();
  AdamW optimizer = AdamW::from_config(params, c);
  data::SyntheticBatchSource source(0, 2048, 2, 32);
  const data::TokenBatch batch = source.next();
  std::vector<double> losses;
  for (int step = 0; step < 25; ++step) {
    zero_grads(params);
    std::unique_ptr<models::ActivationRecord> record = model.new_record();
    losses.push_back(model.forward(batch.inputs, batch.labels, *record) / 64.0);
    model.backward(*record, 1.0f / 64);
    clip_grads(params, 1.0, grad_norm(params));
    optimizer.step(c.optimizer.lr);
  }
  EXPECT_GT(losses.front(), 7.5);
  EXPECT_LT(losses.back(), 4.0) << "no memorisation: " << losses.front() << " -> " << losses.back();
}

// The device the constructor is given holds the model, its gradients and the optimizer
// state; a CPU run given the CPU explicitly is the default run, bit for bit.
TEST(Trainer, TrainsOnTheDeviceItIsGiven) {
  Trainer explicit_cpu(tiny_job("device_cpu"), nullptr, Device::cpu());
  EXPECT_EQ(explicit_cpu.device(), Device::cpu());
  EXPECT_EQ(explicit_cpu.model().device(), Device::cpu());
  for (nn::Parameter* p : explicit_cpu.model().parameters()) {
    EXPECT_EQ(p->shard().device(), Device::cpu()) << p->name();
    EXPECT_EQ(p->shard_grad().device(), Device::cpu()) << p->name();
  }
  for (size_t i = 0; i < explicit_cpu.model().parameters().size(); ++i) {
    EXPECT_EQ(explicit_cpu.optimizer().exp_avg(i).device(), Device::cpu());
  }
  Trainer by_default(tiny_job("device_default"));
  if (!by_default.device().is_cpu()) GTEST_SKIP() << "the default device here is a GPU";
  const std::vector<StepResult> a = explicit_cpu.train(), b = by_default.train();
  ASSERT_EQ(a.size(), b.size());
  for (size_t s = 0; s < a.size(); ++s) EXPECT_EQ(a[s].loss, b[s].loss) << "step " << s + 1;
}

#if !TITAN_HAVE_CUDA
TEST(Trainer, CudaDeviceWithoutCudaBuildIsInputError) {
  try {
    Trainer trainer(tiny_job("device_cuda"), nullptr, Device::cuda(0));
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA"), std::string::npos) << e.what();
  }
}
#endif

// training.mixed_precision_param's default (bfloat16) is for GPUs: a CPU that was not given
// the key computes with its f32 masters themselves.
TEST(Trainer, CpuComputesInF32UnlessBf16IsGiven) {
  config::JobConfig c = tiny_job("cpu_precision");
  c.training.mixed_precision_param = config::Precision::Bfloat16;  // the default, not given
  Trainer trainer(c, nullptr, Device::cpu());
  EXPECT_EQ(trainer.model().compute_dtype(), DType::F32);
  for (nn::Parameter* p : trainer.model().parameters()) {
    EXPECT_EQ(p->value().dtype(), DType::F32) << p->name();
    EXPECT_TRUE(p->value().shares_storage_with(p->shard())) << p->name();
  }
}

config::JobConfig given_bf16(config::JobConfig c) {
  c.training.mixed_precision_param = config::Precision::Bfloat16;
  c.given_keys.insert("training.mixed_precision_param");
  return c;
}

// Given explicitly, bfloat16 makes a CPU with AVX512_BF16 compute in bf16 (compute copies
// over f32 masters); one without it refuses, naming the ISA and the way out.
TEST(Trainer, GivenBf16ComputesInBf16OnACpuThatHasIt) {
  const config::JobConfig c = given_bf16(tiny_job("cpu_bf16_given"));
  if (!cpu_has_bf16()) {
    try {
      Trainer trainer(c, nullptr, Device::cpu());
      FAIL() << "no error on a CPU without AVX512_BF16";
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("AVX512_BF16"), std::string::npos) << message;
      EXPECT_NE(message.find("float32"), std::string::npos) << message;
    }
    return;
  }
  Trainer trainer(c, nullptr, Device::cpu());
  EXPECT_EQ(trainer.model().compute_dtype(), DType::BF16);
  for (nn::Parameter* p : trainer.model().parameters()) {
    EXPECT_EQ(p->value().dtype(), DType::BF16) << p->name();
    EXPECT_EQ(p->shard().dtype(), DType::F32) << p->name();
    EXPECT_EQ(p->grad().dtype(), DType::F32) << p->name();
  }
}

// 10 steps of bf16 mixed precision on the CPU against the f32 run: losses within 2e-2 and
// grad norms within 5% every step (the GPU's bf16 bounds, test/unit/train/cuda/).
TEST(Trainer, Bf16OnTheCpuTrainsNearF32) {
  if (!cpu_has_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16 (bf16 is refused there)";
  config::JobConfig c = tiny_job("cpu_bf16_f32");
  c.training.steps = 10;
  c.training.global_batch_size = 4;  // two microbatches: bf16 activations, f32 accumulation
  const std::vector<StepResult> f32 = Trainer(c, nullptr, Device::cpu()).train();
  c.job.dump_folder = fresh_folder("cpu_bf16_bf16").string();
  const std::vector<StepResult> bf16 = Trainer(given_bf16(c), nullptr, Device::cpu()).train();
  ASSERT_EQ(bf16.size(), f32.size());
  for (size_t s = 0; s < f32.size(); ++s) {
    std::printf("step %zu  loss f32 %.6f bf16 %.6f  grad_norm f32 %.6f bf16 %.6f\n", s + 1,
                f32[s].loss, bf16[s].loss, f32[s].grad_norm, bf16[s].grad_norm);
    EXPECT_NEAR(bf16[s].loss, f32[s].loss, 2e-2) << "step " << s + 1;
    EXPECT_NEAR(bf16[s].grad_norm, f32[s].grad_norm, 0.05 * f32[s].grad_norm) << "step " << s + 1;
  }
}

#if TITAN_HAVE_HDF5
// A bf16 run resumes bitwise: the checkpoint holds the f32 masters and the load refreshes
// the bf16 compute copies from them.
TEST(Trainer, Bf16OnTheCpuResumesBitwise) {
  if (!cpu_has_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16 (bf16 is refused there)";
  config::JobConfig c = given_bf16(tiny_job("cpu_bf16_resume"));
  c.training.steps = 4;
  c.checkpoint.enable = true;
  c.checkpoint.interval = 2;
  const std::vector<StepResult> straight = Trainer(c, nullptr, Device::cpu()).train();
  fs::remove(fs::path(c.job.dump_folder) / c.checkpoint.folder / "step-4.h5");
  const std::vector<StepResult> resumed = Trainer(c, nullptr, Device::cpu()).train();
  ASSERT_EQ(straight.size(), 4u);
  ASSERT_EQ(resumed.size(), 2u);  // steps 3 and 4
  for (size_t s = 0; s < 2; ++s) {
    EXPECT_EQ(resumed[s].step, straight[s + 2].step);
    EXPECT_EQ(resumed[s].loss, straight[s + 2].loss) << "step " << resumed[s].step;
    EXPECT_EQ(resumed[s].grad_norm, straight[s + 2].grad_norm) << "step " << resumed[s].step;
  }
}
#endif

TEST(Trainer, ReduceInOtherThanFloat32IsInputError) {
  config::JobConfig c = tiny_job("reduce_precision");
  c.training.mixed_precision_reduce = config::Precision::Bfloat16;
  try {
    Trainer trainer(c, nullptr, Device::cpu());
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("training.mixed_precision_reduce"), std::string::npos) << message;
    EXPECT_NE(message.find("not built"), std::string::npos) << message;
  }
}

// torchtitan's should_validate: step 1 and every validation.freq steps; every pass reads
// the same windows (the validation source is opened once and rewound), so a pass without a
// step between gives the same loss.
TEST(Trainer, ValidatesAtStepOneAndEveryFreqSteps) {
  config::JobConfig c = tiny_job("validation_steps");
  c.training.steps = 7;
  c.validation.enable = true;
  c.validation.dataset_path = testing::assets_path("data/sotu");
  c.validation.freq = 3;
  c.validation.seq_len = 32;
  c.validation.local_batch_size = 2;
  c.validation.steps = 2;
  Trainer trainer(c);
  std::vector<int64_t> validated;
  for (const StepResult& r : trainer.train()) {
    if (r.val_loss) validated.push_back(r.step);
  }
  EXPECT_EQ(validated, (std::vector<int64_t>{1, 3, 6}));
  const ValidationResult a = trainer.validate(), b = trainer.validate();
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.tokens, 2 * 2 * 32);
}

TEST(Trainer, UnknownModelNameIsInputErrorListingTheKnownOnes) {
  config::JobConfig c = tiny_job("unknown_model");
  c.model.name = "gpt2";
  try {
    Trainer trainer(c);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "model.name: 'gpt2' is not a known model; known: llama3, deepseek_v3");
  }
}

// The config is validated again by the trainer: a combination of keys that no job may run
// with (here profiling's window longer than its cycle) fails before anything is built.
TEST(Trainer, ConfigRulesBetweenKeysAreInputErrors) {
  config::JobConfig c = tiny_job("cross_keys");
  c.profiling.enable_profiling = true;
  c.profiling.profile_freq = 2;
  c.profiling.profiler_warmup = 2;
  c.profiling.profiler_active = 1;
  EXPECT_THROW(Trainer trainer(c), InputError);
}

TEST(Trainer, GlobalBatchThatDoesNotDivideIsInputError) {
  config::JobConfig c = tiny_job("bad_batch");
  c.training.local_batch_size = 3;
  c.training.global_batch_size = 8;
  try {
    Trainer trainer(c);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("training.global_batch_size"), std::string::npos) << e.what();
  }
}

TEST(Trainer, UnbuiltDatasetIsInputError) {
  config::JobConfig c = tiny_job("dataset");
  c.training.dataset = "c4_test";
  EXPECT_THROW(Trainer trainer(c), InputError);
}

TEST(Trainer, NonFiniteStepThrowsDivergedOrIsSkippedWhenAsked) {
  config::JobConfig c = tiny_job("diverge");
  c.optimizer.lr = 1e30;
  c.lr_scheduler.warmup_steps = 1;
  c.training.steps = 6;
  {
    Trainer trainer(c);
    try {
      trainer.train();
      FAIL() << "no divergence";
    } catch (const DivergedError& e) {
      EXPECT_NE(std::string(e.what()).find("diverged at step"), std::string::npos) << e.what();
    }
  }
  c.training.skip_nonfinite_steps = true;
  Trainer trainer(c);
  const std::vector<StepResult> results = trainer.train();
  ASSERT_EQ(results.size(), 6u);
  EXPECT_TRUE(results.back().skipped);
}

TEST(Trainer, MetricsFileGetsOneJsonLinePerLoggedStepAndIsAppendedTo) {
  const config::JobConfig c = tiny_job("metrics");
  for (int run = 0; run < 2; ++run) {
    Trainer trainer(c);
    trainer.train();
  }
  std::ifstream in(fs::path(c.job.dump_folder) / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    for (const char* key : {"\"step\"", "\"loss\"", "\"grad_norm\"", "\"lr\"", "\"tps\"", "\"tflops\"",
                            "\"mfu\"", "\"memory_gib\"", "\"elapsed_s\""}) {
      EXPECT_NE(line.find(key), std::string::npos) << key << " missing in " << line;
    }
  }
  EXPECT_EQ(lines, 6);
}

}  // namespace
}  // namespace titan::train

namespace titan::train {
namespace {

namespace fs = std::filesystem;

// The real executable: a huge learning rate makes the weights overflow, and the run stops
// with exit code 3 and one line naming the step.
TEST(TrainerProcess, DivergedRunExitsThreeNamingTheStep) {
  const std::string dump = (fs::temp_directory_path() / "titan_trainer_diverge").string();
  const testing::ProcessResult result = testing::run_titan_train(
      {"--model.flavor", "tiny", "--training.dataset", "synthetic", "--training.steps", "8",
       "--training.seq_len", "16", "--training.local_batch_size", "1", "--optimizer.lr", "1e30",
       "--lr_scheduler.warmup_steps", "1", "--metrics.peak_tflops", "1",
       "--activation_checkpoint.mode", "none", "--job.dump_folder", dump});
  EXPECT_EQ(result.exit_code, 3) << result.err;
  EXPECT_NE(result.err.find("error: training diverged at step "), std::string::npos) << result.err;
}

}  // namespace
}  // namespace titan::train

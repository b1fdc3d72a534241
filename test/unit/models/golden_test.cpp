// Each family's whole model against an independent PyTorch run (tools/reference/): logits,
// loss, every parameter gradient, then the losses of 5 optimizer steps with clipping, warmup
// and decay. Golden data: test/golden/<family>/<variant>/, made by
// tools/reference/regenerate_golden.sh from titan.cpp's own initialization and batches.
// llama3: tiny_block_causal masks attention per document, its documents the sentences of one
// address (test/golden/llama3/documents); tiny_float8 and tiny_float8_rowwise train with
// Float8 linears (tensorwise and rowwise recipes), the reference simulating fp8 rounding.
// deepseek_v3: tiny (latent attention with a query rank, grouped sigmoid routing, YaRN),
// also the experts' load of step 1 and the load-balancing biases after step 5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "support/gradient_check.h"
#include "titan/ckpt/safetensors.h"
#include "titan/config/load.h"
#include "titan/models/deepseek_v3/model.h"
#include "titan/models/registry.h"
#include "titan/ops/cross_entropy.h"
#include "titan/train/trainer.h"

namespace titan::models {
namespace {

namespace fs = std::filesystem;
using testing::Values;
using testing::to_values;

// "<family>/<variant>": a folder of test/golden.
class ModelGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::path(TITAN_SOURCE_DIR) / "test/golden" / GetParam();
    config_ = config::load_job_config((dir_ / "job.yaml").string());
    std::string name = GetParam();
    std::replace(name.begin(), name.end(), '/', '_');
    config_.job.dump_folder = (fs::temp_directory_path() / ("titan_golden_" + name)).string();
    config_.metrics.peak_tflops = 1.0;
    // A variant's token shards are committed beside it, named from the source tree.
    std::optional<std::string>& data = config_.training.dataset_path;
    if (data && fs::path(*data).is_relative()) data = (fs::path(TITAN_SOURCE_DIR) / *data).string();
    fs::remove_all(config_.job.dump_folder);
    golden_ = std::make_unique<ckpt::SafetensorsFile>(ckpt::read_safetensors((dir_ / "golden.safetensors").string()));
    batch_ = std::make_unique<ckpt::SafetensorsFile>(ckpt::read_safetensors((dir_ / "batch.safetensors").string()));
    float8_ = train::float8_training_for(config_, Device::cpu());
  }

  // Microbatch a of step s (0-based) from the committed batch file.
  std::pair<Tensor, Tensor> microbatch(int64_t s, int64_t a) const {
    const Shape& shape = batch_->shape("tokens");  // [S, A, B, T]
    const int64_t index = s * shape[1] + a;
    const Shape bt{shape[2], shape[3]};
    Tensor tokens = batch_->tensor("tokens").reshape({-1, shape[2], shape[3]}).narrow(index, 1).reshape(bt);
    Tensor labels = batch_->tensor("labels").reshape({-1, shape[2], shape[3]}).narrow(index, 1).reshape(bt);
    return {tokens, labels};
  }

  Values golden(const std::string& name) const { return to_values(golden_->tensor(name)); }

  // Each gradient against PyTorch's, relative to its norm. Float8 scales by amaxes (per row,
  // or per tensor), so the GEMMs' summation order (oneDNN's, OpenBLAS's per core type and
  // PyTorch's all differ) can move an amax by an ulp and flip an fp8 rounding downstream:
  // on an AVX-512 Xeon, rowwise 1.4e-3 in one layer with oneDNN's GEMMs and tensorwise
  // 3.8e-4 with OpenBLAS's SkylakeX ones (both within 1e-4 on AMD's OpenBLAS). A wrong cast
  // is far larger.
  double gradient_tolerance() const { return float8_ ? 5e-3 : 1e-4; }

  // The model of the variant's config, initialized, its documents cut at config.json's EOS.
  std::unique_ptr<Model> model() const {
    nn::ParameterLayout layout;
    if (float8_) layout.float8 = &*float8_;
    std::unique_ptr<Model> model = model_family(config_.model.name).build(config_, layout);
    model->initialize(config_.debug.effective_seed());
    std::ifstream file(dir_ / "config.json");
    const nlohmann::json reference = nlohmann::json::parse(file);
    if (reference.contains("eos_id")) model->set_document_end(reference["eos_id"].get<int32_t>());
    return model;
  }

  fs::path dir_;
  config::JobConfig config_;
  std::optional<nn::Float8Training> float8_;  // the variant's Float8 linears, if any
  std::unique_ptr<ckpt::SafetensorsFile> golden_, batch_;
};

// The golden data was made from this initialization; a change in init must regenerate it.
TEST_P(ModelGolden, InitializationIsTheOneTheGoldenDataWasMadeFrom) {
  const std::unique_ptr<Model> model = this->model();
  const nlohmann::json fingerprint = nlohmann::json::parse(golden_->metadata().at("init_fingerprint"));
  ASSERT_EQ(fingerprint.size(), model->parameters().size());
  for (nn::Parameter* p : model->parameters()) {
    const Values v = to_values(p->value());
    double sum = 0, abs_sum = 0;
    for (double x : v) {
      sum += x;
      abs_sum += std::fabs(x);
    }
    const nlohmann::json& f = fingerprint.at(p->name());
    EXPECT_EQ(f[0].get<int64_t>(), int64_t(v.size())) << p->name();
    EXPECT_NEAR(sum, f[1].get<double>(), 1e-9 * std::max(1.0, f[2].get<double>())) << p->name()
        << ": the initialization changed; run tools/reference/regenerate_golden.sh";
    EXPECT_NEAR(abs_sum, f[2].get<double>(), 1e-9 * f[2].get<double>()) << p->name();
  }
}

TEST_P(ModelGolden, LogitsLossAndEveryGradientMatchPyTorch) {
  {
    const std::unique_ptr<Model> model = this->model();
    const std::unique_ptr<ActivationRecord> record = model->new_record();
    const auto [tokens, labels] = microbatch(0, 0);
    model->forward(tokens, labels, *record);
    testing::expect_close(to_values(model->logits(*record)), golden("logits"), 1e-5, "logits");
  }
  const std::unique_ptr<Model> owned = model();
  Model& model = *owned;
  const int64_t accumulation = batch_->shape("tokens")[1];
  const std::unique_ptr<ActivationRecord> owned_record = model.new_record();
  ActivationRecord& record = *owned_record;

  // Step 1's loss and gradients over all of its microbatches, as the trainer computes them.
  int64_t valid = 0;
  for (int64_t a = 0; a < accumulation; ++a) valid += ops::cross_entropy_valid_tokens(microbatch(0, a).second);
  model.zero_grads();
  double loss_sum = 0;
  for (int64_t a = 0; a < accumulation; ++a) {
    const auto [t, l] = microbatch(0, a);
    loss_sum += model.forward(t, l, record);
    model.backward(record, float(1.0 / double(valid)));
  }
  const double loss = loss_sum / double(valid);
  EXPECT_NEAR(loss, golden("loss")[0], 1e-5 * golden("loss")[0]);
  // A mixture of experts: the picks each expert received, exactly (the same routing).
  if (golden_->contains("tokens_per_expert")) {
    EXPECT_EQ(to_values(model.expert_load()), golden("tokens_per_expert"));
  }

  std::map<std::string, Values> reference;
  std::stringstream files(golden_->metadata().at("grad_files"));
  for (std::string file; std::getline(files, file, ',');) {
    const ckpt::SafetensorsFile grads = ckpt::read_safetensors((dir_ / file).string());
    for (const std::string& name : grads.names()) reference[name] = to_values(grads.tensor(name));
  }
  ASSERT_EQ(reference.size(), model.parameters().size());
  for (nn::Parameter* p : model.parameters()) {
    const Values& expected = reference.at("grad." + p->name());
    const Values actual = to_values(p->grad());
    ASSERT_EQ(actual.size(), expected.size()) << p->name();
    double diff = 0, norm = 0;
    for (size_t i = 0; i < actual.size(); ++i) {
      diff += (actual[i] - expected[i]) * (actual[i] - expected[i]);
      norm += expected[i] * expected[i];
    }
    EXPECT_LE(std::sqrt(diff), gradient_tolerance() * std::sqrt(norm))
        << p->name() << ": |g - g_ref| / |g_ref| = " << std::sqrt(diff / norm);
  }
}

TEST_P(ModelGolden, FiveTrainingStepsMatchPyTorch) {
  train::Trainer trainer(config_);
  const std::vector<train::StepResult> steps = trainer.train();
  const Values losses = golden("losses"), norms = golden("grad_norms"), lrs = golden("lrs");
  ASSERT_EQ(steps.size(), losses.size());
  for (size_t s = 0; s < steps.size(); ++s) {
    EXPECT_NEAR(steps[s].loss, losses[s], 1e-4 * losses[s]) << "step " << s + 1;
    EXPECT_NEAR(steps[s].grad_norm, norms[s], 1e-4 * norms[s]) << "step " << s + 1;
    EXPECT_NEAR(steps[s].lr, lrs[s], 1e-7 * lrs[s]) << "step " << s + 1;
  }
  // Load balancing: the biases after the last step's update (steps of +-coeff, recentred).
  if (golden_->contains("expert_bias")) {
    const auto& model = dynamic_cast<deepseek_v3::DeepSeekV3Model&>(trainer.model());
    Values biases;
    for (const nn::Moe* moe : model.moe_layers()) {
      for (const double b : to_values(moe->bias())) biases.push_back(b);
    }
    testing::expect_close(biases, golden("expert_bias"), 1e-6, "expert_bias");
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelGolden,
                         ::testing::Values("llama3/tiny", "llama3/tiny_tied",
                                           "llama3/tiny_block_causal", "llama3/tiny_float8",
                                           "llama3/tiny_float8_rowwise", "deepseek_v3/tiny"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '/', '_');
                           return name;
                         });

}  // namespace
}  // namespace titan::models

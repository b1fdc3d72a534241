// DeepSeek's published format, end to end: a small DeepSeek V3 in Hugging Face's layout with
// FP8 weights (e4m3 in 16 x 16 blocks, some ragged, each with its _scale_inv; the router,
// embeddings and norms BF16; a nonzero e_score_correction_bias), written by the PyTorch
// reference (tools/reference/deepseek_v3_reference.py make-hf; test/golden/deepseek_v3/
// hf_fp8), imported with titan-ckpt's import, loaded by the trainer
// (checkpoint.initial_load_path) gives the reference's logits on its tokens: every name,
// every dequantized block and the routing bias must be right, since the bias decides which
// experts run.
#include <gtest/gtest.h>

#include <filesystem>

#include "support/gradient_check.h"
#include "titan/build_config.h"
#include "titan/ckpt/safetensors.h"
#include "titan/train/trainer.h"
#if TITAN_HAVE_HDF5
#include "titan/ckpt/hdf5/hf_convert.h"
#endif

namespace titan {
namespace {

#if TITAN_HAVE_HDF5
namespace fs = std::filesystem;

TEST(DeepSeekV3HfImport, Fp8WeightsImportedGiveTheReferenceLogits) {
  const fs::path golden = fs::path(TITAN_SOURCE_DIR) / "test/golden/deepseek_v3";
  const fs::path dump = fs::temp_directory_path() / "titan_dsv3_hf_import";
  fs::remove_all(dump);
  ckpt::HfImportOptions options;
  options.hf_dir = (golden / "hf_fp8").string();
  options.out = (dump / "imported.h5").string();
  const ckpt::HfImportReport report = ckpt::import_hf_safetensors(options);
  EXPECT_EQ(report.config.model.name, "deepseek_v3");
  EXPECT_EQ(report.config.model.flavor, "tiny");

  const ckpt::SafetensorsFile reference =
      ckpt::read_safetensors((golden / "hf_fp8_reference.safetensors").string());
  const Tensor tokens = reference.tensor("tokens");  // [1, T]
  config::JobConfig config;
  config.model.name = "deepseek_v3";
  config.model.flavor = "tiny";
  config.training.dataset = "synthetic";
  config.training.seq_len = tokens.size(1);  // 40, past the original 32: YaRN on
  config.training.local_batch_size = 1;
  config.training.steps = 1;
  config.metrics.peak_tflops = 1;
  config.job.dump_folder = dump.string();
  config.checkpoint.enable = true;
  config.checkpoint.initial_load_path = options.out;
  config.checkpoint.initial_load_model_only = true;
  train::Trainer trainer(config);
  models::Model& model = trainer.model();
  const std::unique_ptr<models::ActivationRecord> record = model.new_record();
  model.forward(tokens, tokens, *record);
  testing::expect_close(testing::to_values(model.logits(*record)),
                        testing::to_values(reference.tensor("logits")), 1e-4, "logits");
  fs::remove_all(dump);
}
#endif

}  // namespace
}  // namespace titan

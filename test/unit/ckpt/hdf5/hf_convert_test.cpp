// `titan-ckpt export` and `import` (ckpt/hdf5/hf_convert.h): HF names, shapes and values
// (wq and wk reordered for rotate_half), sharding with an index, no lm_head when tied,
// bf16 rounding, import(export(x)) == x, and the first mismatched tensor named (exit 2).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <vector>

#include "support/train_process.h"
#include "titan/ckpt/hdf5/hf_convert.h"
#include "titan/ckpt/hdf5/inspect.h"
#include "titan/ckpt/safetensors.h"
#include "titan/models/llama3/hf_adapter.h"
#include "unit/ckpt/hdf5/tiny_checkpoint.h"

namespace titan::ckpt {
namespace {

using titan::testing::ProcessResult;
using titan::testing::run_titan_ckpt;
using namespace titan::ckpt::testing;
using models::llama3::hf_name_from_titan;
using models::llama3::rope_permuted_heads;
using models::llama3::rope_rows_to_hf;

class HfConvert : public CheckpointFolder {
 protected:
  // `titan-ckpt export` of `checkpoint` into the folder `hf` with extra arguments.
  ProcessResult export_to(const std::string& checkpoint, const std::string& hf,
                          std::vector<std::string> extra = {}) {
    std::vector<std::string> arguments = {"export", checkpoint, "--format", "safetensors", "--hf", hf};
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    return run_titan_ckpt(arguments);
  }
};

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

bool same_floats(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != DType::F32 || b.dtype() != DType::F32) return false;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (a.data<float>()[i] != b.data<float>()[i]) return false;
  }
  return true;
}

TEST_F(HfConvert, ExportWritesHfNamesShapesAndValues) {
  const TensorMap written = write_tiny_checkpoint(file("step-7.h5"), tiny_job());
  const ProcessResult r = export_to(file("step-7.h5"), file("hf"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(file("hf/model.safetensors.index.json")));
  const SafetensorsFile model = read_safetensors(file("hf/model.safetensors"));
  EXPECT_EQ(model.metadata().at("format"), "pt");
  ASSERT_EQ(model.names().size(), written.size());
  const models::llama3::ModelArgs args = models::llama3::model_args_from_config(tiny_job());
  for (const auto& [name, value] : written) {
    const std::string hf_name = *hf_name_from_titan(name);
    ASSERT_TRUE(model.contains(hf_name)) << hf_name;
    EXPECT_EQ(model.dtype(hf_name), DType::F32);
    EXPECT_EQ(model.shape(hf_name), value.shape()) << hf_name;
    const auto heads = rope_permuted_heads(name, args);
    const Tensor expected = heads ? rope_rows_to_hf(value, *heads) : value;
    EXPECT_TRUE(same_floats(model.tensor(hf_name), expected)) << hf_name;
  }
  // wq's rows did move: HF row 1 is titan row 2 of head 0.
  const Tensor q = model.tensor("model.layers.0.self_attn.q_proj.weight");
  const Tensor& wq = written.at("layers.0.attention.wq.weight");
  EXPECT_EQ(q.data<float>()[1 * 64 + 5], wq.data<float>()[2 * 64 + 5]);

  const nlohmann::json config = read_json(file("hf/config.json"));
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["hidden_size"], 64);
  EXPECT_EQ(config["num_key_value_heads"], 2);
  EXPECT_EQ(config["intermediate_size"], 192);
  EXPECT_EQ(config["max_position_embeddings"], 64);
  EXPECT_EQ(config["tie_word_embeddings"], false);
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["rope_scaling"]["rope_type"], "llama3");
}

TEST_F(HfConvert, ExportShardsAboveTheLimitWithAnIndex) {
  write_tiny_checkpoint(file("step-7.h5"), tiny_job());
  // The embedding alone is 512 KiB: it takes a file of its own; layers share files.
  const ProcessResult r = export_to(file("step-7.h5"), file("hf"), {"--max-shard-bytes", "200000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(file("hf/model.safetensors")));
  const nlohmann::json index = read_json(file("hf/model.safetensors.index.json"));
  const nlohmann::json& weight_map = index["weight_map"];
  EXPECT_EQ(weight_map.size(), 75u);
  std::set<std::string> files;
  int64_t total = 0;
  for (const auto& [tensor, name] : weight_map.items()) {
    files.insert(name.get<std::string>());
    const SafetensorsFile shard = read_safetensors(file("hf/" + name.get<std::string>()));
    ASSERT_TRUE(shard.contains(tensor)) << tensor << " not in " << name;
    total += shape_numel(shard.shape(tensor)) * 4;
  }
  EXPECT_EQ(index["metadata"]["total_size"], total);
  ASSERT_GE(files.size(), 4u);
  char first[64], last[64];
  std::snprintf(first, sizeof(first), "model-00001-of-%05zu.safetensors", files.size());
  std::snprintf(last, sizeof(last), "model-%05zu-of-%05zu.safetensors", files.size(), files.size());
  EXPECT_EQ(*files.begin(), first);
  EXPECT_EQ(*files.rbegin(), last);
  for (const std::string& name : files) {
    int64_t bytes = 0;
    const SafetensorsFile shard = read_safetensors(file("hf/" + name));
    for (const std::string& tensor : shard.names()) bytes += shape_numel(shard.shape(tensor)) * 4;
    EXPECT_TRUE(bytes <= 200000 || shard.names().size() == 1) << name << ": " << bytes << " bytes";
  }

  // Exporting again unsharded leaves no stale shard or index behind.
  ASSERT_EQ(export_to(file("step-7.h5"), file("hf")).exit_code, 0);
  std::set<std::string> left;
  for (const auto& entry : fs::directory_iterator(file("hf"))) left.insert(entry.path().filename().string());
  EXPECT_EQ(left, (std::set<std::string>{"config.json", "model.safetensors"}));
}

TEST_F(HfConvert, ExportOfATiedModelHasNoLmHead) {
  write_tiny_checkpoint(file("tied.h5"), tiny_job(true));
  ASSERT_EQ(export_to(file("tied.h5"), file("hf")).exit_code, 0);
  const SafetensorsFile model = read_safetensors(file("hf/model.safetensors"));
  EXPECT_EQ(model.names().size(), 74u);
  EXPECT_FALSE(model.contains("lm_head.weight"));
  EXPECT_TRUE(model.contains("model.embed_tokens.weight"));
  EXPECT_EQ(read_json(file("hf/config.json"))["tie_word_embeddings"], true);
}

TEST_F(HfConvert, ExportInBfloat16RoundsEveryValue) {
  const TensorMap written = write_tiny_checkpoint(file("step-7.h5"), tiny_job());
  ASSERT_EQ(export_to(file("step-7.h5"), file("hf"), {"--dtype", "bfloat16"}).exit_code, 0);
  const SafetensorsFile model = read_safetensors(file("hf/model.safetensors"));
  EXPECT_EQ(read_json(file("hf/config.json"))["torch_dtype"], "bfloat16");
  const Tensor norm = model.tensor("model.layers.4.post_attention_layernorm.weight");
  ASSERT_EQ(norm.dtype(), DType::BF16);
  const Tensor& w = written.at("layers.4.ffn_norm.weight");
  for (int64_t i = 0; i < w.numel(); ++i) {
    EXPECT_EQ(norm.data<bf16_t>()[i].bits, bf16_from_f32(w.data<float>()[i]).bits) << i;
  }
}

TEST_F(HfConvert, ExportRefusesTensorsOfAnotherModel) {
  write_tiny_checkpoint(file("tiny.h5"), tiny_job());
  // A checkpoint whose config says debugmodel but whose tensors are tiny's.
  config::JobConfig debug = tiny_job();
  debug.model.flavor = "debugmodel";
  const std::string mixed = file("mixed.h5");
  {
    ModelFileAttributes attributes;
    attributes.config_yaml = config::to_yaml(debug);
    ModelFileWriter writer(mixed, attributes);
    for (const auto& [name, value] : write_tiny_checkpoint(file("source.h5"), tiny_job())) writer.add(name, value);
    writer.finish();
  }
  const ProcessResult r = export_to(mixed, file("hf"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find(mixed + ": model/"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("is [2048, 64], the model its config_yaml describes has [2048, 256]"), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(file("hf/model.safetensors")));
}

TEST_F(HfConvert, ImportOfExportIsTheSameCheckpoint) {
  for (bool tied : {false, true}) {
    const std::string tag = tied ? "tied" : "untied";
    const std::string original = file(tag + ".h5"), hf = file(tag + "_hf"), back = file(tag + "_back.h5");
    write_tiny_checkpoint(original, tiny_job(tied), 5);
    // Sharded on the way out, so that import reads an index too.
    ASSERT_EQ(export_to(original, hf, {"--max-shard-bytes", "300000"}).exit_code, 0);
    ASSERT_TRUE(fs::exists(hf + "/model.safetensors.index.json"));
    const ProcessResult imported = run_titan_ckpt({"import", hf, "--out", back});
    ASSERT_EQ(imported.exit_code, 0) << imported.err;
    EXPECT_NE(imported.out.find(tied ? "74 tensors, flavor tiny with model.enable_weight_tying=true"
                                     : "75 tensors, flavor tiny, training.seq_len=64"),
              std::string::npos) << imported.out;

    const ProcessResult diff = run_titan_ckpt({"diff", original, back});
    ASSERT_EQ(diff.exit_code, 0) << diff.err;
    EXPECT_EQ(max_abs_diff(diff.out), 0.0) << diff.out;
    EXPECT_EQ(diff.out.find("only in"), std::string::npos) << diff.out;

    const CheckpointInfo info = read_checkpoint_info(back);
    EXPECT_EQ(info.step, 0);
    EXPECT_EQ(info.model_only, 1);
    config::JobConfig recorded;
    config::apply_yaml_text(recorded, info.config_yaml, "config_yaml");
    EXPECT_EQ(recorded.model.flavor, "tiny");
    EXPECT_EQ(recorded.model.enable_weight_tying, tied);
    EXPECT_EQ(recorded.training.seq_len, 64);
    EXPECT_EQ(config::to_yaml(recorded), config::to_yaml(tiny_job(tied)));
  }
}

// DeepSeek V3: one HF tensor per routed expert (stacked back on import), the routing bias as
// HF's e_score_correction_bias, DeepSeek's config.json; import(export(x)) == x, flavor found.
TEST_F(HfConvert, DeepSeekV3ExpertsTravelOneTensorPerExpertAndComeBackStacked) {
  config::JobConfig job;
  job.model.name = "deepseek_v3";
  job.model.flavor = "tiny";
  job.training.seq_len = 32;  // the flavor's original length: what an import records
  const std::string original = file("dsv3.h5"), hf = file("dsv3_hf"), back = file("back.h5");
  const TensorMap written = write_tiny_checkpoint(original, job, 3);
  ASSERT_EQ(export_to(original, hf).exit_code, 0);
  const SafetensorsFile exported = read_safetensors(hf + "/model.safetensors");
  const Tensor w2 = written.at("layers.2.moe.experts.w2");  // [8, 64, 32]
  for (const int64_t expert : {0, 7}) {
    const std::string name = "model.layers.2.mlp.experts." + std::to_string(expert) +
                             ".down_proj.weight";
    ASSERT_TRUE(exported.contains(name)) << name;
    EXPECT_TRUE(same_floats(exported.tensor(name), w2.narrow(expert, 1).reshape({64, 32})))
        << name;
  }
  EXPECT_TRUE(same_floats(exported.tensor("model.layers.1.mlp.gate.e_score_correction_bias"),
                          written.at("layers.1.moe.expert_bias")));
  EXPECT_TRUE(exported.contains("model.layers.1.self_attn.kv_a_proj_with_mqa.weight"));
  EXPECT_FALSE(exported.contains("model.layers.0.mlp.gate.weight"));  // a dense layer
  const nlohmann::json config = read_json(hf + "/config.json");
  EXPECT_EQ(config["model_type"], "deepseek_v3");
  EXPECT_EQ(config["n_routed_experts"], 8);
  EXPECT_EQ(config["scoring_func"], "sigmoid");

  const ProcessResult imported = run_titan_ckpt({"import", hf, "--out", back});
  ASSERT_EQ(imported.exit_code, 0) << imported.err;
  EXPECT_NE(imported.out.find("flavor tiny"), std::string::npos) << imported.out;
  const ProcessResult diff = run_titan_ckpt({"diff", original, back});
  ASSERT_EQ(diff.exit_code, 0) << diff.err;
  EXPECT_EQ(max_abs_diff(diff.out), 0.0) << diff.out;
  EXPECT_EQ(diff.out.find("only in"), std::string::npos) << diff.out;
}

// Progress per tensor, ending once the files are written; titan-ckpt shows it (in a test its
// stderr is no terminal: one end line each).
TEST_F(HfConvert, ProgressCountsTensorsAndEndsOnceTheFilesAreWritten) {
  write_tiny_checkpoint(file("step-7.h5"), tiny_job());
  std::vector<std::pair<int64_t, int64_t>> exported, imported;
  HfExportOptions out;
  out.out_dir = file("hf");
  out.max_shard_bytes = 300000;
  out.progress = [&](int64_t done, int64_t total) {
    exported.emplace_back(done, total);
    if (done == total) {
      EXPECT_TRUE(fs::exists(file("hf/config.json")));
    }
  };
  export_hf_safetensors(file("step-7.h5"), out);
  HfImportOptions in;
  in.hf_dir = file("hf");
  in.out = file("back.h5");
  in.progress = [&](int64_t done, int64_t total) {
    imported.emplace_back(done, total);
    if (done == total) {
      EXPECT_TRUE(fs::exists(file("back.h5")));
    }
  };
  import_hf_safetensors(in);
  for (const auto* told : {&exported, &imported}) {
    ASSERT_EQ(told->size(), 75u);
    for (size_t i = 0; i < told->size(); ++i) {
      EXPECT_EQ((*told)[i], std::make_pair(int64_t(i + 1), int64_t(75)));
    }
  }

  const ProcessResult r = export_to(file("step-7.h5"), file("hf2"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("export: done, 75 tensors in "), std::string::npos) << r.err;
  const ProcessResult back = run_titan_ckpt({"import", file("hf2"), "--out", file("back2.h5")});
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_NE(back.err.find("import: done, 75 tensors in "), std::string::npos) << back.err;
}

TEST_F(HfConvert, ImportNamesTheFirstMismatchedTensor) {
  write_tiny_checkpoint(file("step-7.h5"), tiny_job());
  ASSERT_EQ(export_to(file("step-7.h5"), file("hf")).exit_code, 0);
  // Replace one tensor with one of another shape; config.json still says tiny.
  const SafetensorsFile model = read_safetensors(file("hf/model.safetensors"));
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : model.names()) {
    tensors.emplace_back(name, name == "model.layers.3.mlp.up_proj.weight" ? Tensor::zeros({128, 64}, DType::F32)
                                                                          : model.tensor(name));
  }
  write_safetensors(file("hf/model.safetensors"), tensors);
  const ProcessResult r = run_titan_ckpt({"import", file("hf"), "--out", file("back.h5")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("model.layers.3.mlp.up_proj.weight is [128, 64], config.json's model has [192, 64]"),
            std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(file("back.h5")));
  EXPECT_FALSE(fs::exists(file("back.h5.tmp")));

  // Shapes right again, plus a tensor that no Llama has.
  for (auto& [name, value] : tensors) {
    if (name == "model.layers.3.mlp.up_proj.weight") value = Tensor::zeros({192, 64}, DType::F32);
  }
  tensors.emplace_back("model.layers.0.self_attn.q_norm.weight", Tensor::zeros({16}, DType::F32));
  write_safetensors(file("hf/model.safetensors"), tensors);
  const ProcessResult extra = run_titan_ckpt({"import", file("hf"), "--out", file("back.h5")});
  EXPECT_EQ(extra.exit_code, 2) << extra.err;
  EXPECT_NE(extra.err.find("model.layers.0.self_attn.q_norm.weight is not a weight"), std::string::npos) << extra.err;
}

TEST_F(HfConvert, ImportWithAFlavorChecksItsShapes) {
  write_tiny_checkpoint(file("step-7.h5"), tiny_job());
  ASSERT_EQ(export_to(file("step-7.h5"), file("hf")).exit_code, 0);
  const ProcessResult wrong = run_titan_ckpt({"import", file("hf"), "--out", file("a.h5"), "--flavor", "debugmodel"});
  EXPECT_EQ(wrong.exit_code, 2) << wrong.err;
  EXPECT_NE(wrong.err.find("flavor debugmodel: model.embed_tokens.weight"), std::string::npos) << wrong.err;
  EXPECT_FALSE(fs::exists(file("a.h5")));
  const ProcessResult right = run_titan_ckpt({"import", file("hf"), "--out", file("b.h5"), "--flavor", "tiny"});
  EXPECT_EQ(right.exit_code, 0) << right.err;
  EXPECT_TRUE(fs::exists(file("b.h5")));
}

TEST_F(HfConvert, ImportNeverReplacesAFile) {
  write_tiny_checkpoint(file("step-7.h5"), tiny_job());
  ASSERT_EQ(export_to(file("step-7.h5"), file("hf")).exit_code, 0);
  const auto before = fs::last_write_time(file("step-7.h5"));
  const ProcessResult r = run_titan_ckpt({"import", file("hf"), "--out", file("step-7.h5")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("exists"), std::string::npos) << r.err;
  EXPECT_EQ(fs::last_write_time(file("step-7.h5")), before);
  EXPECT_EQ(read_checkpoint_info(file("step-7.h5")).step, 7);
}

}  // namespace
}  // namespace titan::ckpt

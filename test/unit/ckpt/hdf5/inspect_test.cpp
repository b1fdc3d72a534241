// Reading checkpoints (ckpt/hdf5/inspect.h) and `titan-ckpt info` / `diff`: attributes and
// datasets as written, bf16 widened exactly, every kind of file that is not a whole
// checkpoint refused with one line naming it (exit 2), and diffs that find one changed value.
#include <fstream>
#include <sstream>

#include "support/train_process.h"
#include "titan/ckpt/hdf5/inspect.h"
#include "unit/ckpt/hdf5/tiny_checkpoint.h"

namespace titan::ckpt {
namespace {

using titan::testing::ProcessResult;
using titan::testing::run_process;
using titan::testing::run_titan_ckpt;
using namespace titan::ckpt::testing;

class CheckpointInspect : public CheckpointFolder {};
class TitanCkpt : public CheckpointFolder {};

// The one line a refused file gives, and that it names the file and the problem.
void expect_one_line_error(const ProcessResult& r, const std::string& path, const std::string& what) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  const std::string line = r.err_lines()[0];
  EXPECT_EQ(line.rfind("error: ", 0), 0u) << line;
  EXPECT_NE(line.find(path), std::string::npos) << line;
  EXPECT_NE(line.find(what), std::string::npos) << line;
}

// The first line of `text` that contains `needle`, or "".
std::string line_containing(const std::string& text, const std::string& needle) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(needle) != std::string::npos) return line;
  }
  return "";
}

// A file with some checkpoint attributes: `format` unless empty, `format_version`, and
// `complete` if asked; the shapes of damage a crash or a foreign writer leaves.
void write_partial_file(const std::string& path, const std::string& format, int64_t version,
                        bool complete) {
  h5::silence_error_stack();
  h5::H5Object file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_TRUE(file.valid());
  h5::H5Object root(H5Gopen2(file.id(), "/", H5P_DEFAULT));
  if (!format.empty()) h5::write_string_attribute(root.id(), "format", format);
  h5::write_int_attribute(root.id(), "format_version", version);
  h5::write_int_attribute(root.id(), "step", 3);
  if (complete) h5::write_int_attribute(root.id(), "complete", 1);
}

TEST_F(CheckpointInspect, InfoHoldsTheAttributesAndEveryDataset) {
  const std::string path = file("step-7.h5");
  write_tiny_checkpoint(path, tiny_job(), 1);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const CheckpointInfo info = read_checkpoint_info(path);
  EXPECT_EQ(info.format_version, 1);
  EXPECT_EQ(info.step, 7);
  EXPECT_EQ(info.tokens_seen, 7 * 8 * 64);
  EXPECT_EQ(info.optimizer_steps, 7);
  EXPECT_EQ(info.seed, 1);
  EXPECT_EQ(info.model_only, 1);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.mesh, "pp 1 x dp_replicate 1 x dp_shard 1 x cp 1 x tp 1");
  EXPECT_EQ(info.config_yaml, config::to_yaml(tiny_job()));
  ASSERT_EQ(info.datasets.size(), 75u);
  const DatasetInfo* wk = info.find("model/layers.5.attention.wk.weight");
  ASSERT_NE(wk, nullptr);
  EXPECT_EQ(wk->shape, (Shape{32, 64}));
  EXPECT_EQ(wk->dtype, DType::F32);
  EXPECT_EQ(info.find("model/layers.8.attention.wk.weight"), nullptr);
  EXPECT_NE(info.find("model/output.weight"), nullptr);
}

TEST_F(CheckpointInspect, ReadWholeDatasetGivesTheValuesWritten) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    const std::string path = file(std::string("values_") + std::string(dtype_name(dtype)) + ".h5");
    const TensorMap written = write_tiny_checkpoint(path, tiny_job(), 3, dtype);
    EXPECT_EQ(read_checkpoint_info(path).find("model/norm.weight")->dtype, dtype);
    for (const char* name : {"tok_embeddings.weight", "layers.7.feed_forward.w2.weight", "norm.weight"}) {
      const Tensor read = read_whole_dataset(path, std::string("model/") + name);
      const Tensor& w = written.at(name);
      ASSERT_EQ(read.dtype(), DType::F32);
      ASSERT_EQ(read.shape(), w.shape());
      for (int64_t i = 0; i < read.numel(); ++i) {
        const float expected = dtype == DType::BF16 ? f32_from_bf16(w.data<bf16_t>()[i]) : w.data<float>()[i];
        ASSERT_EQ(read.data<float>()[i], expected) << name << " element " << i;
      }
    }
    EXPECT_THROW(read_whole_dataset(path, "model/nothing.weight"), InputError);
  }
}

TEST_F(CheckpointInspect, RefusesFilesThatAreNotWholeCheckpointsNamingThem) {
  const std::string text = file("notes.h5");
  std::ofstream(text) << "not hdf5\n";
  const std::string foreign = file("foreign.h5"), future = file("future.h5"), unfinished = file("step-3.h5");
  write_partial_file(foreign, "", 1, true);
  write_partial_file(future, kFormatName, 2, true);
  write_partial_file(unfinished, kFormatName, 1, false);
  const std::pair<std::string, std::string> cases[] = {
      {file("missing.h5"), "no such file"},
      {text, "not an HDF5 file"},
      {foreign, "not a titan.cpp checkpoint"},
      {future, "format_version 2"},
      {unfinished, "complete"},
  };
  for (const auto& [path, what] : cases) {
    try {
      read_checkpoint_info(path);
      ADD_FAILURE() << "no InputError for " << path;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
    expect_one_line_error(run_titan_ckpt({"info", path}), path, what);
  }
}

TEST_F(TitanCkpt, InfoPrintsAttributesConfigAndEveryTensor) {
  const std::string path = file("step-7.h5");
  write_tiny_checkpoint(path, tiny_job(), 1, DType::BF16);
  const ProcessResult r = run_titan_ckpt({"info", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& expected :
       {std::string("step: 7\n"), std::string("tokens_seen: 3584\n"), std::string("world_size: 1\n"),
        std::string("mesh: pp 1 x dp_replicate 1 x dp_shard 1 x cp 1 x tp 1\n"),
        std::string("config_yaml (model section; --config all prints all):\n  model:\n    name: \"llama3\"\n"),
        std::string("    flavor: \"tiny\"\n"), std::string("datasets: 75,")}) {
    EXPECT_NE(r.out.find(expected), std::string::npos) << expected << "\n" << r.out;
  }
  EXPECT_EQ(r.out.find("training:"), std::string::npos) << r.out;
  const std::string embedding = line_containing(r.out, "model/tok_embeddings.weight ");
  EXPECT_NE(embedding.find(" [2048, 64]  bfloat16"), std::string::npos) << r.out;  // the widest shape
  const std::string w1 = line_containing(r.out, "model/layers.7.feed_forward.w1.weight ");
  EXPECT_NE(w1.find(" [192, 64]   bfloat16"), std::string::npos) << r.out;

  const ProcessResult all = run_titan_ckpt({"info", path, "--config", "all"});
  EXPECT_NE(all.out.find("\n  training:\n"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("    seq_len: 64\n"), std::string::npos) << all.out;
  const ProcessResult none = run_titan_ckpt({"info", path, "--config", "none"});
  EXPECT_EQ(none.out.find("config_yaml"), std::string::npos) << none.out;
  EXPECT_NE(none.out.find("datasets: 75,"), std::string::npos) << none.out;
}

TEST_F(TitanCkpt, DiffOfEqualFilesIsZero) {
  write_tiny_checkpoint(file("a.h5"), tiny_job(), 1);
  write_tiny_checkpoint(file("b.h5"), tiny_job(), 1);
  const ProcessResult r = run_titan_ckpt({"diff", file("a.h5"), file("b.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(max_abs_diff(r.out), 0.0) << r.out;
  EXPECT_EQ(r.out.find("only in"), std::string::npos);
}

TEST_F(TitanCkpt, DiffReportsOneChangedValue) {
  write_tiny_checkpoint(file("a.h5"), tiny_job(), 1);
  write_tiny_checkpoint(file("b.h5"), tiny_job(), 1, DType::F32, [](const std::string& name, Tensor& t) {
    if (name == "layers.2.feed_forward.w2.weight") t.mutable_data<float>()[1234] += 0.5f;
  });
  const CheckpointDiff diff = diff_checkpoints(file("a.h5"), file("b.h5"));
  ASSERT_EQ(diff.tensors.size(), 75u);
  for (const TensorDifference& t : diff.tensors) {
    if (t.path == "model/layers.2.feed_forward.w2.weight") {
      EXPECT_NEAR(t.max_abs, 0.5, 1e-6);
      EXPECT_GT(t.max_rel, 0.0);
    } else {
      EXPECT_EQ(t.max_abs, 0.0) << t.path;
    }
  }
  const ProcessResult r = run_titan_ckpt({"diff", file("a.h5"), file("b.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NEAR(max_abs_diff(r.out), 0.5, 1e-6) << r.out;
  const std::string changed = line_containing(r.out, "model/layers.2.feed_forward.w2.weight ");
  EXPECT_NE(changed.find(" 0.5 "), std::string::npos) << r.out;
}

TEST_F(TitanCkpt, DiffListsTensorsInOneFileAndDifferentAttributes) {
  write_tiny_checkpoint(file("untied.h5"), tiny_job(false), 1);
  write_tiny_checkpoint(file("tied.h5"), tiny_job(true), 2, DType::BF16);
  const ProcessResult r = run_titan_ckpt({"diff", file("untied.h5"), file("tied.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("only in A: model/output.weight\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("seed: 1 vs 2\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("config_yaml: differs\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(float32 vs bfloat16)"), std::string::npos) << r.out;
  EXPECT_GT(max_abs_diff(r.out), 0.1);
}

TEST_F(TitanCkpt, BadArgumentsExitTwoWithOneLine) {
  write_tiny_checkpoint(file("a.h5"), tiny_job(), 1);
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"inspect", file("a.h5")}, "unknown command 'inspect'"},
      {{"info"}, "expected one checkpoint FILE"},
      {{"diff", file("a.h5")}, "expected two checkpoints"},
      {{"info", file("a.h5"), "--colour", "red"}, "unknown option --colour"},
      {{"info", file("a.h5"), "--config", "some"}, "--config 'some'"},
      {{"diff", file("a.h5"), file("b.h5")}, file("b.h5") + ": no such file"},
      {{"export", file("a.h5"), "--hf", file("hf"), "--format", "gguf"}, "--format 'gguf'"},
      {{"export", file("a.h5")}, "--hf is required"},
      {{"import", file("hf"), "--out", file("b.h5")}, file("hf") + ": no such folder"},
  };
  for (const auto& [arguments, what] : cases) expect_one_line_error(run_titan_ckpt(arguments), "", what);
}

// docs/checkpoints.md: `h5ls -r` shows every tensor. Only where hdf5-tools is installed.
TEST_F(TitanCkpt, H5lsListsEveryTensorWithItsShape) {
  if (!fs::exists("/usr/bin/h5ls")) GTEST_SKIP() << "no /usr/bin/h5ls (hdf5-tools)";
  write_tiny_checkpoint(file("a.h5"), tiny_job(), 1, DType::BF16);
  const ProcessResult r = run_process("/usr/bin/h5ls", {"-r", file("a.h5")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(line_containing(r.out, "/model/layers.3.attention.wq.weight ").find("Dataset {64, 64}"),
            std::string::npos) << r.out;
  EXPECT_NE(line_containing(r.out, "/model/output.weight ").find("Dataset {2048, 64}"), std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace titan::ckpt

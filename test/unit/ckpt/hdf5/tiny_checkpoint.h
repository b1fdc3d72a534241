// Shared by the checkpoint tool tests: a fresh folder per test, tiny model-only checkpoints
// with known values (written by ckpt/hdf5/model_file.h), and reading what titan-ckpt prints.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "titan/ckpt/hdf5/model_file.h"
#include "titan/config/load.h"
#include "titan/core/float_formats.h"
#include "titan/models/registry.h"

namespace titan::ckpt::testing {

namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class CheckpointFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/titan_ckpt_XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// The job a tiny test checkpoint records (docs/design.md's test model, seq 64).
inline config::JobConfig tiny_job(bool tied = false) {
  config::JobConfig job;
  job.model.flavor = "tiny";
  job.model.enable_weight_tying = tied;
  job.training.seq_len = 64;
  return job;
}

using TensorMap = std::map<std::string, Tensor>;

// Writes a model-only checkpoint of `job`'s model (its parameters, then its buffers) at
// `path` whose values are normal(0, 1) draws seeded by (seed, tensor index), stored as
// `dtype`; `edit` may change any tensor before it is written. Returns the tensors as written.
inline TensorMap write_tiny_checkpoint(const std::string& path, const config::JobConfig& job,
                                       int64_t seed = 1, DType dtype = DType::F32,
                                       const std::function<void(const std::string&, Tensor&)>& edit = {}) {
  ModelFileAttributes attributes;
  attributes.step = 7;
  attributes.tokens_seen = 7 * 8 * 64;
  attributes.seed = seed;
  attributes.config_yaml = config::to_yaml(job);
  ModelFileWriter writer(path, attributes);
  TensorMap written;
  const models::ModelFamily& family = models::model_family(job.model.name);
  std::vector<models::ParameterShape> shapes = family.parameter_shapes(job);
  for (const models::ParameterShape& buffer : family.buffer_shapes(job)) shapes.push_back(buffer);
  for (size_t i = 0; i < shapes.size(); ++i) {
    std::mt19937 rng(uint32_t(seed * 1000 + int64_t(i)));
    std::normal_distribution<float> normal;
    Tensor t = Tensor::empty(shapes[i].shape, dtype);
    for (int64_t k = 0; k < t.numel(); ++k) {
      if (dtype == DType::BF16) {
        t.mutable_data<bf16_t>()[k] = bf16_from_f32(normal(rng));
      } else {
        t.mutable_data<float>()[k] = normal(rng);
      }
    }
    if (edit) edit(shapes[i].name, t);
    writer.add(shapes[i].name, t);
    written[shapes[i].name] = t;
  }
  writer.finish();
  return written;
}

// The X of the last line "max abs diff: X" that `titan-ckpt diff` prints; -1 if absent.
inline double max_abs_diff(const std::string& out) {
  const std::string key = "max abs diff: ";
  const size_t at = out.rfind(key);
  if (at == std::string::npos) return -1;
  return std::stod(out.substr(at + key.size()));
}

}  // namespace titan::ckpt::testing

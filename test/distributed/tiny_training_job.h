// The job the training tests on a mesh start from: the tiny model on the sotu shards,
// sequences of 64, 10 steps with 3 of warmup, a log line every 5, no start-up sgemm
// measurement, and a dump folder of its own per test and rank (emptied first). Each test
// sets its batch and parallelism on top.
#pragma once

#include <filesystem>
#include <string>

#include "distributed_test_main.h"
#include "support/train_process.h"
#include "titan/config/job_config.h"

inline constexpr int64_t kTinyTrainingSteps = 10;

inline titan::config::JobConfig tiny_training_job(const std::string& folder_name) {
  titan::config::JobConfig c;
  const std::filesystem::path dump =
      std::filesystem::temp_directory_path() /
      (folder_name + "_rank" + std::to_string(test_world().rank()));
  std::filesystem::remove_all(dump);
  c.job.dump_folder = dump.string();
  c.model.flavor = "tiny";
  c.training.dataset = "sotu";
  c.training.dataset_path = titan::testing::assets_path("data/sotu");
  c.training.seq_len = 64;
  c.training.steps = kTinyTrainingSteps;
  c.lr_scheduler.warmup_steps = 3;
  c.metrics.log_freq = 5;
  c.metrics.peak_tflops = 1.0;  // skip the start-up sgemm measurement
  return c;
}

// The job trained 2 steps, validating at step 2 on 3 batches of `batch` windows of 64
// tokens: what the validation tests compare across layouts.
inline titan::config::JobConfig with_validation(titan::config::JobConfig c, int64_t batch) {
  c.training.steps = 2;
  c.validation.enable = true;
  c.validation.freq = 2;
  c.validation.seq_len = 64;
  c.validation.local_batch_size = batch;
  c.validation.steps = 3;
  return c;
}

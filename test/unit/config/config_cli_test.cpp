// The command line as a user meets it: the real titan-train, its exit status and its one
// line on stderr for each kind of bad input (docs/design.md, "Errors, exit codes, logs").
#include <gtest/gtest.h>

#include <filesystem>

#include <algorithm>

#include "titan/build_config.h"
#include "titan/config/fields.h"
#include "support/train_process.h"

namespace titan::testing {
namespace {

using config::Field;
using config::FieldKind;

// Bad input: exit 2 and exactly one line, "error: ...", holding every expected piece.
void expect_rejected(const std::vector<std::string>& arguments,
                     const std::vector<std::string>& pieces) {
  const ProcessResult result = run_titan_train(arguments);
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_TRUE(result.out.empty()) << result.out;
  const std::vector<std::string> lines = result.err_lines();
  ASSERT_EQ(lines.size(), 1u) << result.err;
  EXPECT_EQ(lines[0].rfind("error: ", 0), 0u) << lines[0];
  for (const std::string& piece : pieces) {
    EXPECT_NE(lines[0].find(piece), std::string::npos) << "'" << piece << "' not in: " << lines[0];
  }
}

// The merged config's line for `key` ("  steps: 9") from --print-config.
std::string printed_line(const std::vector<std::string>& arguments, const std::string& key) {
  std::vector<std::string> with_print = arguments;
  with_print.push_back("--print-config");
  const ProcessResult result = run_titan_train(with_print);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  const std::string short_key = key.substr(key.rfind('.') + 1);
  // Find the section's block first so that keys repeated across sections stay apart.
  size_t at = 0;
  for (size_t dot = 0, begin = 0, depth = 0; (dot = key.find('.', begin)) != std::string::npos;
       begin = dot + 1, ++depth) {
    at = result.out.find(std::string(2 * depth, ' ') + key.substr(begin, dot - begin) + ":\n", at);
    EXPECT_NE(at, std::string::npos) << key;
  }
  const size_t depth = size_t(std::count(key.begin(), key.end(), '.'));
  const std::string prefix = "\n" + std::string(2 * depth, ' ') + short_key + ": ";
  const size_t line = result.out.find(prefix, at);
  if (line == std::string::npos) return "";
  const size_t begin = line + 1;
  return result.out.substr(begin, result.out.find('\n', begin) - begin);
}

TEST(ConfigCommandLine, PrintConfigWritesOnlyYamlOnStdout) {
  const ProcessResult result = run_titan_train({"--print-config"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_TRUE(result.err.empty()) << result.err;
  EXPECT_EQ(result.out.rfind("job:\n", 0), 0u);
  EXPECT_NE(result.out.find("\ntraining:\n"), std::string::npos);
  EXPECT_NE(result.out.find("\n  steps: 10000\n"), std::string::npos);
}

TEST(ConfigCommandLine, RejectsUnknownKeyNamingTheNearest) {
  expect_rejected({"--training.stepz", "5"}, {"training.stepz", "did you mean training.steps?"});
  expect_rejected({"--steps", "5"}, {"--steps", "did you mean training.steps?"});
}

TEST(ConfigCommandLine, RejectsUnknownSection) {
  expect_rejected({"--trainig.steps", "5"},
                  {"unknown section trainig", "did you mean training.steps?"});
  const std::string file = write_temp_file("unknown_section.yaml", "trainig:\n  steps: 5\n");
  expect_rejected({"--config", file}, {file + ":1:1", "unknown section trainig",
                                       "did you mean training?"});
  const std::string key_file = write_temp_file("unknown_key.yaml", "training:\n  stepz: 5\n");
  expect_rejected({"--config", key_file},
                  {key_file + ":2:3", "training.stepz", "did you mean training.steps?"});
}

TEST(ConfigCommandLine, RejectsWrongTypes) {
  expect_rejected({"--training.steps", "ten"},
                  {"--training.steps", "expected an integer", "'ten'"});
  expect_rejected({"--training.steps", "1.5"}, {"--training.steps", "expected an integer"});
  expect_rejected({"--optimizer.lr", "fast"}, {"--optimizer.lr", "expected a number"});
  expect_rejected({"--checkpoint.last_save_model_only=maybe"},
                  {"--checkpoint.last_save_model_only", "expected true or false"});
  const std::string file = write_temp_file("wrong_type.yaml", "training:\n  seq_len: long\n");
  expect_rejected({"--config", file}, {file + ":2:12", "training.seq_len", "expected an integer"});
  const std::string list = write_temp_file("wrong_list.yaml", "compile:\n  components: model\n");
  expect_rejected({"--config", list}, {"compile.components", "expected a list"});
  expect_rejected({"--training.steps"}, {"--training.steps needs a value"});
  expect_rejected({"stray"}, {"unexpected argument 'stray'"});
}

TEST(ConfigCommandLine, RejectsOutOfRangeValuesSayingWhatIsAllowed) {
  expect_rejected({"--training.steps", "-5"}, {"training.steps", "-5", ">= 1"});
  expect_rejected({"--optimizer.lr", "0"}, {"optimizer.lr", "> 0"});
  expect_rejected({"--optimizer.lr", "-1e-3"}, {"optimizer.lr", "> 0"});
  expect_rejected({"--optimizer.beta1", "1"}, {"optimizer.beta1", "in [0, 1)"});
  expect_rejected({"--optimizer.beta2=-0.1"}, {"optimizer.beta2", "in [0, 1)"});
  expect_rejected({"--checkpoint.keep_latest_k", "1"}, {"checkpoint.keep_latest_k", "not 1"});
  expect_rejected({"--training.global_batch_size", "0"}, {"training.global_batch_size", "or -1"});
  expect_rejected({"--activation_checkpoint.selective_ac_option", "x"},
                  {"activation_checkpoint.selective_ac_option", "a count >= 0 or op"});
}

TEST(ConfigCommandLine, RejectsUnlistedChoicesListingTheAllowedOnes) {
  expect_rejected({"--activation_checkpoint.mode", "partial"},
                  {"activation_checkpoint.mode", "'partial'",
                   "selective, full, memory_budget, none"});
  expect_rejected({"--training.dtype", "float16"}, {"training.dtype", "bfloat16, float32"});
  expect_rejected({"--model.converters", "float8"},
                  {"model.converters", "'float8'", "quantize.linear.float8"});
}

TEST(ConfigCommandLine, RejectsMissingFile) {
  expect_rejected({"--config", "/nonexistent/job.yaml"}, {"/nonexistent/job.yaml", "not found"});
  expect_rejected({"--job.config_file", "/nonexistent/job.yaml"}, {"/nonexistent/job.yaml"});
}

TEST(ConfigCommandLine, RejectsMalformedYamlWithLineAndColumn) {
  const std::string file =
      write_temp_file("malformed.yaml", "training:\n  steps: [1, 2\n  seq_len: 5\n");
  expect_rejected({"--config", file}, {file + ":3:10", "malformed YAML"});
  const std::string indent =
      write_temp_file("indent.yaml", "training:\n  steps: 5\n   seq_len: 5\n");
  expect_rejected({"--config", indent}, {indent + ":3:", "malformed YAML"});
}

// Every key whose value can switch on a feature that is not built, with such a value: the
// list comes from the field table, so a feature that lands drops out of this test.
TEST(ConfigCommandLine, RejectsEachFeatureNotBuiltYetNamingIt) {
  int checked = 0;
  for (const Field& field : config::job_config_fields()) {
    if (!field.feature) continue;
    const config::FeatureInfo& info = config::feature_info(*field.feature);
    if (info.built || info.when_missing != config::WhenMissing::Reject) continue;
    std::string value;
    switch (field.kind) {
      case FieldKind::Bool: value = "true"; break;
      case FieldKind::Int: value = "2"; break;
      case FieldKind::StringList:  // the first allowed element that switches it on
        for (auto choice = field.choices.rbegin(); choice != field.choices.rend(); ++choice) {
          const config::FieldValue list(config::StringList{*choice});
          if (field.switches_on(list, field.default_value())) value = *choice;
        }
        break;
      case FieldKind::Choice:
        for (const std::string& choice : field.choices) {
          if (field.switches_on(config::FieldValue(choice), field.default_value())) value = choice;
        }
        break;
      default: FAIL() << field.name << ": no switching value for this kind";
    }
    SCOPED_TRACE(field.name + " " + value);
    ASSERT_TRUE(field.switches_on(config::parse_text(field, value, field.name),
                                  field.default_value()));
    expect_rejected({"--" + field.name, value},
                    {"--" + field.name, info.name,
                     info.missing_from_build.empty() ? "not built yet" : info.missing_from_build});
    ++checked;
  }
  EXPECT_GE(checked, 9);  // the list today; fewer means a feature landed: lower this
}

// quantize.linear.float8: torchtitan's names and rules, each refusal naming the key.
TEST(ConfigCommandLine, Float8KeysFollowTorchtitansRules) {
  const std::vector<std::string> float8 = {"--model.converters", "quantize.linear.float8"};
  auto with_float8 = [&](std::vector<std::string> more) {
    more.insert(more.begin(), float8.begin(), float8.end());
    return more;
  };
  expect_rejected({"--model.converters", "quantize.linear.float9"},
                  {"--model.converters", "quantize.linear.float9", "quantize.linear.float8"});
  expect_rejected({"--model.converters", "quantize.linear.mx"},
                  {"--model.converters", "MX and grouped-GEMM converters", "not built yet"});
  expect_rejected(with_float8({"--quantize.linear.float8.recipe_name", "columnwise"}),
                  {"recipe_name", "columnwise", "rowwise_with_gw_hp"});
  for (const char* key : {"enable_fsdp_float8_all_gather",
                          "precompute_float8_dynamic_scale_for_fsdp"}) {
    expect_rejected(with_float8({std::string("--quantize.linear.float8.") + key, "true",
                                 "--quantize.linear.float8.recipe_name", "rowwise"}),
                    {std::string("quantize.linear.float8.") + key, "tensorwise", "rowwise"});
  }
  expect_rejected(with_float8({"--quantize.linear.float8.filter_fqns", "auto_filter_small_kn",
                               "--quantize.linear.float8.recipe_name", "rowwise_with_gw_hp"}),
                  {"quantize.linear.float8.filter_fqns", "auto_filter_small_kn"});
  // Without the converter the section's values are only stored, as torchtitan's.
  EXPECT_EQ(printed_line({"--quantize.linear.float8.recipe_name", "rowwise",
                          "--quantize.linear.float8.enable_fsdp_float8_all_gather", "true"},
                         "quantize.linear.float8.enable_fsdp_float8_all_gather"),
            "      enable_fsdp_float8_all_gather: true");
}

TEST(ConfigCommandLine, SwitchingAFeatureOffIsAccepted) {
  EXPECT_EQ(printed_line({"--checkpoint.enable", "false"}, "checkpoint.enable"), "  enable: false");
  EXPECT_EQ(printed_line({"--checkpoint.no_enable"}, "checkpoint.enable"), "  enable: false");
  EXPECT_EQ(printed_line({"--parallelism.data_parallel_shard_degree", "1"},
                         "parallelism.data_parallel_shard_degree"),
            "  data_parallel_shard_degree: 1");
  expect_rejected({"--metrics.enable_wandb"}, {"metrics.enable_wandb", "Weights & Biases logging"});
}

// Activation checkpointing is built: asking for it trains, with no warning.
TEST(ConfigCommandLine, ActivationCheckpointingRunsWithoutAWarning) {
  const std::string dump = (std::filesystem::temp_directory_path() / "titan_cli_ac").string();
  const ProcessResult result = run_titan_train(
      {"--activation_checkpoint.mode", "full", "--model.flavor", "tiny", "--training.dataset",
       "synthetic", "--training.steps", "1", "--training.seq_len", "8",
       "--training.local_batch_size", "1", "--metrics.peak_tflops", "1", "--job.dump_folder", dump});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.err.find("activation checkpointing"), std::string::npos) << result.err;
}

TEST(ConfigCommandLine, TrainPathTrainsAndLogsOnStderrOnly) {
  const std::string dump = (std::filesystem::temp_directory_path() / "titan_cli_train").string();
  const ProcessResult result = run_titan_train(
      {"--model.flavor", "tiny", "--training.dataset", "synthetic", "--training.steps", "2",
       "--training.seq_len", "16", "--training.local_batch_size", "1", "--metrics.peak_tflops",
       "1", "--metrics.log_freq", "1", "--activation_checkpoint.mode", "none",
       "--job.dump_folder", dump});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_TRUE(result.out.empty()) << result.out;
  EXPECT_NE(result.err.find("llama3 tiny"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("step: 2 "), std::string::npos) << result.err;
}

TEST(ConfigCommandLine, DatasetWithoutItsPipelineIsRejected) {
  const ProcessResult result = run_titan_train({"--training.steps", "3"});  // default c4_test
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("training.dataset"), std::string::npos) << result.err;
}

TEST(ConfigCommandLine, BooleansAreSwitchesOrTakeAValue) {
  const std::string key = "checkpoint.last_save_model_only";  // default true
  EXPECT_EQ(printed_line({}, key), "  last_save_model_only: true");
  EXPECT_EQ(printed_line({"--checkpoint.no_last_save_model_only"}, key),
            "  last_save_model_only: false");
  EXPECT_EQ(printed_line({"--checkpoint.no-last-save-model-only"}, key),
            "  last_save_model_only: false");
  EXPECT_EQ(printed_line({"--checkpoint.last_save_model_only", "false"}, key),
            "  last_save_model_only: false");
  EXPECT_EQ(printed_line({"--checkpoint.last_save_model_only=no"}, key),
            "  last_save_model_only: false");
  EXPECT_EQ(printed_line({"--checkpoint.no_last_save_model_only",
                          "--checkpoint.last_save_model_only"}, key),
            "  last_save_model_only: true");
  EXPECT_EQ(printed_line({"--metrics.disable_color_printing"}, "metrics.disable_color_printing"),
            "  disable_color_printing: true");
}

TEST(ConfigCommandLine, AcceptsEqualsFormDashesAndNegativeValues) {
  EXPECT_EQ(printed_line({"--training.local-batch-size=4"}, "training.local_batch_size"),
            "  local_batch_size: 4");
  EXPECT_EQ(printed_line({"--training.dataloader.num_workers", "2"},
                         "training.dataloader.num_workers"),
            "    num_workers: 2");
  EXPECT_EQ(printed_line({"--checkpoint.load_step", "-1", "--training.steps", "5"},
                         "checkpoint.load_step"),
            "  load_step: -1");
  EXPECT_EQ(printed_line({"--job.description=a=b"}, "job.description"), "  description: \"a=b\"");
}

TEST(ConfigCommandLine, ListsAreOneCommaSeparatedArgument) {
  EXPECT_EQ(printed_line({"--checkpoint.exclude_from_loading", "optimizer,dataloader"},
                         "checkpoint.exclude_from_loading"),
            "  exclude_from_loading: [\"optimizer\", \"dataloader\"]");
  EXPECT_EQ(printed_line({"--compile.components", ""}, "compile.components"), "  components: []");
  EXPECT_EQ(printed_line({"--parallelism.module_fqns_per_model_part", "a,b;c"},
                         "parallelism.module_fqns_per_model_part"),
            "  module_fqns_per_model_part: [[\"a\", \"b\"], [\"c\"]]");
}

TEST(ConfigCommandLine, OptionalKeysCanBeUnset) {
  EXPECT_EQ(printed_line({}, "debug.seed"), "  seed: null");
  EXPECT_EQ(printed_line({"--debug.seed", "5"}, "debug.seed"), "  seed: 5");
  EXPECT_EQ(printed_line({"--debug.seed", "5", "--debug.seed", "null"}, "debug.seed"),
            "  seed: null");
  EXPECT_EQ(printed_line({"--lr_scheduler.decay_ratio", "None"}, "lr_scheduler.decay_ratio"),
            "  decay_ratio: null");
  EXPECT_EQ(printed_line({"--model.dim", "64"}, "model.dim"), "  dim: 64");
  expect_rejected({"--training.steps", "null"}, {"--training.steps", "expected an integer"});
}

TEST(ConfigCommandLine, CommandLineBeatsYamlBeatsDefault) {
  const std::string file = write_temp_file(
      "precedence.yaml", "training:\n  steps: 7\n  seq_len: 128\noptimizer:\n  lr: 3e-4\n");
  const std::vector<std::string> arguments = {"--config", file, "--training.steps", "9"};
  EXPECT_EQ(printed_line(arguments, "training.steps"), "  steps: 9");              // CLI
  EXPECT_EQ(printed_line(arguments, "training.seq_len"), "  seq_len: 128");        // YAML
  EXPECT_EQ(printed_line(arguments, "optimizer.lr"), "  lr: 0.0003");              // YAML
  EXPECT_EQ(printed_line(arguments, "training.local_batch_size"), "  local_batch_size: 8");
  // The CLI can also turn off what a file switched on.
  const std::string on = write_temp_file("on.yaml", "metrics:\n  enable_wandb: true\n");
  expect_rejected({"--config", on}, {on + ":2:3", "metrics.enable_wandb", "Weights & Biases logging"});
  EXPECT_EQ(printed_line({"--config", on, "--metrics.no_enable_wandb"}, "metrics.enable_wandb"),
            "  enable_wandb: false");
}

TEST(ConfigCommandLine, PrintedConfigLoadsBackToTheSameBytes) {
  const ProcessResult first = run_titan_train(
      {"--print-config", "--training.steps", "42", "--optimizer.lr", "0.1",
       "--lr_scheduler.decay_ratio", "0.3", "--job.description", "quote \" and # hash: yes",
       "--checkpoint.exclude_from_loading", "optimizer", "--debug.seed", "3",
       "--model.rope_theta", "500000", "--activation_checkpoint.mode", "none"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string file = write_temp_file("printed.yaml", first.out);
  const ProcessResult second = run_titan_train({"--config", file, "--print-config"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(second.out, first.out);
}

TEST(ConfigCommandLine, VersionNamesTheBuild) {
  const ProcessResult result = run_titan_train({"--version"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  for (const char* piece : {"titan.cpp ", "CUDA: ", "NCCL: ", "MPI: ", "HDF5: ",
                            "BLAS: OpenBLAS ", "GEMM: ", "GFLOP/s", "CPU kernels: ",
                            "threads: "}) {
    EXPECT_NE(result.out.find(piece), std::string::npos) << piece << " not in:\n" << result.out;
  }
  // A CPU GEMM library that does not exist: exit 2 naming the variable.
  setenv("TITAN_CPU_GEMM", "mkl", 1);
  const ProcessResult misnamed = run_titan_train({"--version"});
  unsetenv("TITAN_CPU_GEMM");
  EXPECT_EQ(misnamed.exit_code, 2) << misnamed.err;
  EXPECT_NE(misnamed.err.find("TITAN_CPU_GEMM=mkl"), std::string::npos) << misnamed.err;
  // Nor an instruction set the kernels do not have.
  setenv("TITAN_CPU_ISA", "avx10", 1);
  const ProcessResult no_such_isa = run_titan_train({"--version"});
  unsetenv("TITAN_CPU_ISA");
  EXPECT_EQ(no_such_isa.exit_code, 2) << no_such_isa.err;
  EXPECT_NE(no_such_isa.err.find("TITAN_CPU_ISA=avx10"), std::string::npos) << no_such_isa.err;
}

TEST(ConfigCommandLine, HelpListsEveryKey) {
  const ProcessResult result = run_titan_train({"--help"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  for (const Field& field : config::job_config_fields()) {
    EXPECT_NE(result.out.find("--" + field.name + " "), std::string::npos) << field.name;
  }
}

// Rules between keys live in the config's validation: each combination is one line and
// exit 2 before anything runs, naming the keys and the fix.
TEST(ConfigCommandLine, RejectsCombinationsOfKeysThatCannotRun) {
  expect_rejected({"--profiling.enable_profiling", "--profiling.profile_freq", "3",
                   "--profiling.profiler_warmup", "3", "--profiling.profiler_active", "1"},
                  {"profiler_warmup 3", "profiler_active 1", "profile_freq 3"});
  expect_rejected({"--validation.enable", "--validation.seq_len", "4096", "--training.seq_len",
                   "2048"},
                  {"validation.seq_len 4096", "training.seq_len 2048"});
  if (TITAN_HAVE_HDF5) {  // checkpoint.enable needs a build with checkpoints
    expect_rejected({"--checkpoint.enable", "--checkpoint.last_save_model_only",
                     "--checkpoint.export_dtype", "float16"},
                    {"checkpoint.export_dtype", "float16"});
  }
  expect_rejected({"--training.mixed_precision_reduce", "bfloat16"},
                  {"training.mixed_precision_reduce", "not built"});
  // Sequence parallelism splits each sequence over tp: the nearest lengths that work.
  expect_rejected({"--parallelism.tensor_parallel_degree", "4", "--training.seq_len", "2050"},
                  {"training.seq_len: 2050", "tensor_parallel_degree 4", "2048 or 2052",
                   "enable_sequence_parallel false"});
  expect_rejected({"--parallelism.tensor_parallel_degree", "2", "--training.seq_len", "64",
                   "--validation.enable", "--validation.seq_len", "33"},
                  {"validation.seq_len: 33", "32 or 34"});
  expect_rejected({"--parallelism.tensor_parallel_degree", "2",
                   "--parallelism.enable_async_tensor_parallel",
                   "--parallelism.enable_sequence_parallel", "false"},
                  {"enable_async_tensor_parallel", "enable_sequence_parallel"});
}

}  // namespace
}  // namespace titan::testing

// JobConfig through the library: the field table's own consistency, YAML round trips as
// values, precedence, and the helpers other modules read.
#include <gtest/gtest.h>

#include <set>

#include "titan/config/fields.h"
#include "titan/config/load.h"
#include "titan/core/error.h"
#include "support/train_process.h"

namespace titan::config {
namespace {

// Every value-bearing key equal, by the table (what "equal as values" means for a config).
void expect_same_values(const JobConfig& a, const JobConfig& b) {
  for (const Field& field : job_config_fields()) {
    if (field.command_line_only) continue;
    EXPECT_EQ(format_yaml(field.get(a)), format_yaml(field.get(b))) << field.name;
    EXPECT_TRUE(field.get(a) == field.get(b)) << field.name;
  }
}

TEST(ConfigFieldTable, NamesAreUniqueAndEachDefaultIsAllowed) {
  std::set<std::string> names;
  for (const Field& field : job_config_fields()) {
    EXPECT_TRUE(names.insert(field.name).second) << "twice: " << field.name;
    EXPECT_EQ(check_value(field, field.default_value()), "") << field.name;
    EXPECT_FALSE(field.help.empty()) << field.name;
    if (field.feature) {
      // A default may ask for a feature the job can run without (activation
      // checkpointing's selective), never for one that would be refused.
      if (feature_info(*field.feature).when_missing == WhenMissing::Reject) {
        EXPECT_FALSE(field.switches_on(field.default_value(), field.default_value()))
            << field.name;
      }
      EXPECT_FALSE(field.feature_off.empty()) << field.name;
    }
    if (field.kind == FieldKind::Choice) {
      EXPECT_FALSE(field.choices.empty()) << field.name;
    }
  }
  EXPECT_GT(names.size(), 150u);
}

TEST(ConfigFieldTable, EverySectionOfTorchtitanIsThere) {
  for (const char* section :
       {"job", "profiling", "metrics", "model", "optimizer", "lr_scheduler", "training",
        "training.dataloader", "parallelism", "checkpoint", "activation_checkpoint", "compile",
        "quantize.linear.float8", "quantize.linear.mx", "quantize.grouped_mm.float8",
        "quantize.grouped_mm.mx", "comm", "memory_estimation", "fault_tolerance", "experimental",
        "validation", "validation.dataloader", "debug"}) {
    const auto& sections = job_config_sections();
    EXPECT_NE(std::find(sections.begin(), sections.end(), section), sections.end()) << section;
  }
}

TEST(ConfigFieldTable, EveryFeatureIsListedOnce) {
  std::set<Feature> seen;
  for (const FeatureInfo& info : all_features()) {
    EXPECT_TRUE(seen.insert(info.feature).second) << info.name;
    EXPECT_EQ(info.when_missing == WhenMissing::RunWithoutIt, !info.warning.empty()) << info.name;
  }
  for (const Field& field : job_config_fields()) {
    if (field.feature) {
      EXPECT_TRUE(seen.count(*field.feature)) << field.name;
    }
  }
}

TEST(JobConfigDefaults, AreTorchtitansAndValidate) {
  const JobConfig config;
  EXPECT_NO_THROW(validate(config));
  EXPECT_EQ(config.training.steps, 10000);
  EXPECT_EQ(config.model.flavor, "debugmodel");
  EXPECT_EQ(config.optimizer.lr, 8e-4);
  EXPECT_EQ(config.parallelism.data_parallel_shard_degree, -1);
  EXPECT_EQ(config.activation_checkpoint.mode, ActivationCheckpointMode::Selective);
  EXPECT_EQ(config.checkpoint.keep_latest_k, 10);
  EXPECT_FALSE(config.debug.seed.has_value());
  EXPECT_EQ(config.debug.effective_seed(), 0u);  // docs/design.md: unset means 0
  EXPECT_FALSE(config.model.dim.has_value());
  EXPECT_FALSE(config.metrics.peak_tflops.has_value());
  EXPECT_EQ(config.quantize.linear.mx.filter_fqns, StringList{"output"});
  // The default asks for selective activation checkpointing, which is built: no warning.
  EXPECT_TRUE(config_warnings(config).empty());
}

// Context parallelism deals 2 cp chunks of each sequence (head-tail) or cp of them, and
// sequence parallelism then splits a rank's tokens over tp: one line with the nearest
// lengths that work, for training.seq_len and validation.seq_len.
TEST(JobConfigRules, ContextParallelSequenceLengths) {
  auto problem = [](const JobConfig& c) -> std::string {
    try {
      validate(c);
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  JobConfig c;
  c.parallelism.context_parallel_degree = 2;
  c.training.seq_len = 2048;
  EXPECT_EQ(problem(c), "");
  c.parallelism.tensor_parallel_degree = 2;
  c.training.seq_len = 2052;  // a multiple of 4, not of 2 x 2 x 2
  EXPECT_NE(problem(c).find("training.seq_len: 2052 does not divide by 8"), std::string::npos);
  EXPECT_NE(problem(c).find("use 2048 or 2056"), std::string::npos);
  c.parallelism.context_parallel_load_balancer = std::nullopt;  // contiguous: cp x tp
  EXPECT_EQ(problem(c), "");
  c.training.seq_len = 2048;
  c.validation.enable = true;
  c.validation.seq_len = 2047;
  EXPECT_NE(problem(c).find("validation.seq_len: 2047"), std::string::npos);
}

TEST(JobConfigYaml, RoundTripsAsValuesAndAsBytes) {
  JobConfig config;
  config.training.steps = 42;
  config.optimizer.lr = 1.0 / 3.0;
  config.optimizer.eps = 1e-12;
  config.lr_scheduler.decay_ratio = 0.1;
  config.job.description = "quotes \" backslash \\ colon: hash # tab\t";
  config.job.save_config_file = "null";  // a string that reads like a null
  config.model.rope_theta = 500000.0;
  config.model.norm_eps = 1e-5;
  config.checkpoint.exclude_from_loading = {"optimizer", "dataloader"};
  config.compile.components = {};
  config.parallelism.module_fqns_per_model_part = std::vector<StringList>{{"a", "b"}, {"c"}};
  config.parallelism.context_parallel_load_balancer.reset();
  config.quantize.linear.float8.recipe_name = Float8Recipe::Rowwise;
  config.activation_checkpoint.mode = ActivationCheckpointMode::None;
  config.debug.seed = 1234;
  const std::string printed = to_yaml(config);
  JobConfig loaded;
  apply_yaml_text(loaded, printed, "printed");
  expect_same_values(config, loaded);
  EXPECT_EQ(to_yaml(loaded), printed);
  EXPECT_EQ(loaded.optimizer.lr, 1.0 / 3.0);  // bit for bit
  ASSERT_TRUE(loaded.job.save_config_file.has_value());
  EXPECT_EQ(*loaded.job.save_config_file, "null");
}

TEST(JobConfigYaml, PrintedFileLoadsThroughTheCommandLineAsTheSameValues) {
  const CommandLine first = parse_command_line(std::vector<std::string>{
      "--training.steps", "42", "--optimizer.beta2", "0.999", "--debug.seed", "9",
      "--model.n_layers", "2", "--training.skip_nonfinite_steps"});
  const std::string file = testing::write_temp_file("api_printed.yaml", to_yaml(first.config));
  const CommandLine second = parse_command_line(std::vector<std::string>{"--config", file});
  expect_same_values(first.config, second.config);
  EXPECT_EQ(second.config.job.config_file, file);
  EXPECT_EQ(second.config.model.n_layers, 2);
  EXPECT_TRUE(second.config.training.skip_nonfinite_steps);
}

TEST(JobConfigYaml, OverridesLayerOverAFile) {
  const std::string file = testing::write_temp_file(
      "api_layers.yaml", "training:\n  steps: 7\n  seq_len: 128\ndebug:\n  seed: 4\n");
  const CommandLine cli = parse_command_line(
      std::vector<std::string>{"--config", file, "--training.steps", "9", "--debug.seed=None"});
  EXPECT_EQ(cli.action, Action::Train);
  EXPECT_EQ(cli.config.training.steps, 9);      // command line
  EXPECT_EQ(cli.config.training.seq_len, 128);  // file
  EXPECT_EQ(cli.config.training.local_batch_size, 8);  // default
  EXPECT_FALSE(cli.config.debug.seed.has_value());
  EXPECT_EQ(load_job_config(file).training.steps, 7);
}

// given(): the keys a file or the command line named, whatever the value (a default written
// out counts: it was chosen); the rest are defaults.
TEST(JobConfigYaml, KnowsWhichKeysWereGiven) {
  const std::string file = testing::write_temp_file(
      "api_given.yaml", "training:\n  steps: 7\n  mixed_precision_param: bfloat16\n");
  const CommandLine cli = parse_command_line(
      std::vector<std::string>{"--config", file, "--debug.seed", "4"});
  EXPECT_TRUE(cli.config.given("training.steps"));
  EXPECT_TRUE(cli.config.given("training.mixed_precision_param"));  // the default, written
  EXPECT_TRUE(cli.config.given("debug.seed"));
  EXPECT_FALSE(cli.config.given("training.seq_len"));
  EXPECT_FALSE(JobConfig().given("training.mixed_precision_param"));
  const CommandLine bare = parse_command_line(std::vector<std::string>{"--training.steps", "3"});
  EXPECT_FALSE(bare.config.given("training.mixed_precision_param"));
}

TEST(JobConfigYaml, EmptyValueIsNullOnlyForOptionalKeys) {
  JobConfig config;
  apply_yaml_text(config, "debug:\n  seed:\n", "inline");
  EXPECT_FALSE(config.debug.seed.has_value());
  EXPECT_THROW(apply_yaml_text(config, "training:\n  steps:\n", "inline"), InputError);
  EXPECT_THROW(apply_yaml_text(config, "training:\n  steps: 1\n  steps: 2\n", "inline"),
               InputError);
}

TEST(ConfigCommandLineActions, HelpAndVersionWinOverEverythingElse) {
  EXPECT_EQ(parse_command_line(std::vector<std::string>{"--help", "--training.stepz"}).action,
            Action::ShowHelp);
  EXPECT_EQ(parse_command_line(std::vector<std::string>{"--version"}).action,
            Action::ShowVersion);
  EXPECT_EQ(parse_command_line(std::vector<std::string>{"--print-config"}).action,
            Action::PrintConfig);
  EXPECT_EQ(parse_command_line(std::vector<std::string>{"--print_config"}).action,
            Action::PrintConfig);
  EXPECT_THROW(parse_command_line(std::vector<std::string>{"--config", "a.yaml",
                                                           "--job.config_file", "b.yaml"}),
               InputError);
}

TEST(ConfigNearestKey, SuggestsCloseNamesOnly) {
  EXPECT_EQ(nearest_key("training.stepz"), "training.steps");
  EXPECT_EQ(nearest_key("optimizer.learning_rat"), "");
  EXPECT_EQ(nearest_key("seq_len"), "training.seq_len");
  EXPECT_EQ(nearest_key("trainig"), "training");
  EXPECT_EQ(nearest_key("completely.unrelated.thing"), "");
}

TEST(ConfigFormatFloat, IsShortestAndExact) {
  EXPECT_EQ(format_float(8e-4), "0.0008");
  EXPECT_EQ(format_float(1e-8), "1e-8");
  EXPECT_EQ(format_float(1.0), "1.0");
  EXPECT_EQ(format_float(500000.0), "500000.0");
  EXPECT_EQ(format_float(0.1), "0.1");
  for (const double value : {1.0 / 3.0, 2.5e-300, 123456789.123, -0.0625}) {
    EXPECT_EQ(std::strtod(format_float(value).c_str(), nullptr), value);
  }
}

}  // namespace
}  // namespace titan::config

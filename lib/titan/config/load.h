// Reading a JobConfig: defaults, then a YAML file, then command-line overrides
// (precedence CLI > YAML > default, as torchtitan), then one validation pass.
//
//   CommandLine cli = parse_command_line(argc, argv);   // throws InputError on bad input
//   if (cli.action == Action::Train) train(cli.config);
//
//   JobConfig config = load_job_config("configs/llama3_debug.yaml");   // YAML + validate
//
// Every error is a titan::InputError with one line naming the key (and the file, line and
// column for YAML) and what is allowed; the app prints it and exits 2.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "titan/config/job_config.h"

namespace titan::config {

// Where each key that was set got its value, so that a value refused after merging is
// reported where it was written: "run.yaml:12:3: training.steps", "--training.steps".
using KeyOrigins = std::map<std::string, std::string>;

// Reads a YAML file over `config` (keys it does not name keep their values) and notes in
// `origins` where each key came from. Does not validate: overrides may still come.
void apply_yaml_file(JobConfig& config, const std::string& path, KeyOrigins* origins = nullptr);
// Same, from YAML text; `origin` names it in messages.
void apply_yaml_text(JobConfig& config, const std::string& text, const std::string& origin,
                     KeyOrigins* origins = nullptr);

// Defaults + the file + validate().
JobConfig load_job_config(const std::string& path);

// The whole config as YAML, every key in table order. Loading the output gives the same
// config, and printing that gives the same bytes.
std::string to_yaml(const JobConfig& config);

// Ranges, choices and rules of every key, then features (a value that switches on a feature
// not built is rejected naming it), then the rules between keys (profiling's window within
// profile_freq, validation.seq_len within training.seq_len, ...). Throws InputError, naming
// the key by its origin if known. The trainer validates the config it is given as well.
void validate(const JobConfig& config, const KeyOrigins* origins = nullptr);

// What the job says once before running: features it asked for that are missing but whose
// absence does not change results (activation checkpointing).
std::vector<std::string> config_warnings(const JobConfig& config);

enum class Action { Train, PrintConfig, ShowVersion, ShowHelp };

struct CommandLine {
  Action action = Action::Train;
  JobConfig config;
};

// argv[0] is the program. Options: --config FILE, --print-config, --version, --help, and
// --<section>.<key> VALUE for every key (see command_line_help()).
CommandLine parse_command_line(int argc, const char* const argv[]);
CommandLine parse_command_line(const std::vector<std::string>& arguments);  // without argv[0]
std::string command_line_help();

}  // namespace titan::config

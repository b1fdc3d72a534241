// titan-ckpt: look into checkpoints and convert them to and from Hugging Face's layout.
// Only argument parsing and calls live here (docs/architecture.md); the behaviour is in libtitan
// (ckpt/hdf5/inspect.h, ckpt/hdf5/hf_convert.h) where tests reach it.
//
//   titan-ckpt info FILE [--config model|all|none]   attributes, config, every tensor
//   titan-ckpt diff A B                         per-tensor max abs / rel difference
//   titan-ckpt export FILE --hf DIR [--format safetensors] [--dtype bfloat16|float32]
//                          [--max-shard-bytes N]
//   titan-ckpt import DIR --out FILE [--flavor NAME]
//
// Exit codes: 0 success (diff too, whatever the differences); 2 bad input (arguments, a
// missing, foreign or unfinished checkpoint, an HF folder of another model), one line
// "error: ..."; 1 anything else.
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "titan/app/subcommand.h"
#include "titan/ckpt/hdf5/hf_convert.h"
#include "titan/ckpt/hdf5/inspect.h"
#include "titan/core/error.h"
#include "titan/core/progress.h"

namespace {

constexpr const char* kHelp =
    "usage: titan-ckpt <command> [options]\n"
    "\n"
    "commands:\n"
    "  info FILE [--config model|all|none]\n"
    "      The checkpoint's attributes (step, tokens, mesh, world size, ...), the model\n"
    "      section of its config (or all of it, or none) and every dataset with its global\n"
    "      shape and stored dtype.\n"
    "  diff A B\n"
    "      Per tensor the max abs and max rel difference, tensors found in one file only,\n"
    "      differing attributes, and a last line \"max abs diff: X\". Exits 0 whenever both\n"
    "      files are readable checkpoints.\n"
    "  export FILE --hf DIR [--format safetensors] [--dtype float32|bfloat16]\n"
    "                       [--max-shard-bytes N]\n"
    "      Write the model as a Hugging Face folder (LlamaForCausalLM or\n"
    "      DeepseekV3ForCausalLM, by model.name): config.json and\n"
    "      model.safetensors, or model-0000K-of-0000N.safetensors and\n"
    "      model.safetensors.index.json when the tensors exceed N bytes (default 5000000000).\n"
    "      --dtype defaults to float32.\n"
    "  import DIR --out FILE [--flavor NAME]\n"
    "      Read a Hugging Face Llama or DeepSeek V3 folder (FP8 weights with their\n"
    "      _scale_inv blocks dequantized) and write a step-0 model-only checkpoint. The\n"
    "      recorded config names --flavor (whose shapes must match) or, without it, the\n"
    "      flavor that needs the fewest model.* overrides.\n"
    "\n"
    "  --help, --version\n";

using Arguments = titan::app::SubcommandArguments;
using titan::app::parse_integer;

Arguments parse(int argc, char** argv, const std::vector<std::string>& known) {
  return titan::app::parse_subcommand(argc, argv, known);
}

int info(const Arguments& args) {
  args.expect_positional(1, "one checkpoint FILE");
  using titan::ckpt::ConfigShown;
  const std::string shown = args.has("config") ? args.options.at("config") : "model";
  TITAN_CHECK_INPUT(shown == "model" || shown == "all" || shown == "none")
      << "info: --config '" << shown << "' is not model, all or none";
  const ConfigShown config = shown == "all"    ? ConfigShown::All
                             : shown == "none" ? ConfigShown::None
                                               : ConfigShown::Model;
  const titan::ckpt::CheckpointInfo info = titan::ckpt::read_checkpoint_info(args.positional[0]);
  std::fputs(titan::ckpt::format_checkpoint_info(info, config).c_str(), stdout);
  return 0;
}

int diff(const Arguments& args) {
  args.expect_positional(2, "two checkpoints A B");
  const titan::ckpt::CheckpointDiff diff =
      titan::ckpt::diff_checkpoints(args.positional[0], args.positional[1]);
  std::fputs(titan::ckpt::format_checkpoint_diff(diff).c_str(), stdout);
  return 0;
}

int export_model(const Arguments& args) {
  args.expect_positional(1, "one checkpoint FILE");
  const std::string format = args.has("format") ? args.options.at("format") : "safetensors";
  TITAN_CHECK_INPUT(format == "safetensors")
      << "export: --format '" << format << "' is not known; formats: safetensors";
  titan::ckpt::HfExportOptions options;
  options.out_dir = args.required("hf");
  if (args.has("dtype")) {
    const std::string& dtype = args.options.at("dtype");
    TITAN_CHECK_INPUT(dtype == "float32" || dtype == "bfloat16")
        << "export: --dtype '" << dtype << "' is not float32 or bfloat16";
    options.dtype = dtype == "bfloat16" ? titan::DType::BF16 : titan::DType::F32;
  }
  if (args.has("max-shard-bytes")) {
    options.max_shard_bytes = parse_integer(args.options.at("max-shard-bytes"), "--max-shard-bytes");
  }
  options.progress = titan::progress_callback("export", "tensors");
  const titan::ckpt::HfExportReport report = titan::ckpt::export_hf_safetensors(args.positional[0], options);
  std::ostringstream files;
  for (const std::string& file : report.files) files << (files.tellp() > 0 ? ", " : "") << file;
  std::printf("%s: %lld tensors, %lld bytes (%s): %s\n", options.out_dir.c_str(), (long long)report.tensors,
              (long long)report.total_bytes, options.dtype == titan::DType::BF16 ? "bfloat16" : "float32",
              files.str().c_str());
  return 0;
}

int import_model(const Arguments& args) {
  args.expect_positional(1, "one Hugging Face folder DIR");
  titan::ckpt::HfImportOptions options;
  options.hf_dir = args.positional[0];
  options.out = args.required("out");
  if (args.has("flavor")) options.flavor = args.options.at("flavor");
  options.progress = titan::progress_callback("import", "tensors");
  const titan::ckpt::HfImportReport report = titan::ckpt::import_hf_safetensors(options);
  const titan::config::ModelSection& m = report.config.model;
  std::ostringstream overrides;
  auto note = [&overrides](const char* key, const auto& value) {
    if (value) overrides << " model." << key << "=" << *value;
  };
  note("dim", m.dim);
  note("n_layers", m.n_layers);
  note("n_heads", m.n_heads);
  note("n_kv_heads", m.n_kv_heads);
  note("ffn_dim", m.ffn_dim);
  note("vocab_size", m.vocab_size);
  note("rope_theta", m.rope_theta);
  note("norm_eps", m.norm_eps);
  if (m.enable_weight_tying) overrides << " model.enable_weight_tying=true";
  std::printf("%s: %lld tensors, flavor %s%s%s, training.seq_len=%lld\n", options.out.c_str(),
              (long long)report.tensors, m.flavor.c_str(), overrides.tellp() > 0 ? " with" : "",
              overrides.str().c_str(), (long long)report.config.training.seq_len);
  return 0;
}

int run(int argc, char** argv) {
  const std::string command = argv[1];
  if (command == "info") return info(parse(argc, argv, {"config"}));
  if (command == "diff") return diff(parse(argc, argv, {}));
  if (command == "export") {
    return export_model(parse(argc, argv, {"hf", "format", "dtype", "max-shard-bytes"}));
  }
  if (command == "import") return import_model(parse(argc, argv, {"out", "flavor"}));
  TITAN_FAIL_INPUT() << "unknown command '" << command
                     << "'; commands: info, diff, export, import (see --help)";
  return 2;
}

}  // namespace

int main(int argc, char** argv) { return titan::app::run_subcommand_tool(argc, argv, kHelp, run); }

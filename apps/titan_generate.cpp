// titan-generate: sample text from a checkpoint, on one rank or sharded over the ranks
// mpirun starts (infer/generate.h).
//
//   titan-generate --checkpoint out/checkpoint/step-100.h5 --prompt "Four score"
//       --max-new-tokens 32 [--temperature 0] [--top-k 50] [--seed 1] [--stop-at-eos] [--ids]
//       [--tokenizer PATH] [--tp N]
// --tp N: tensor parallel over groups of N ranks (the rest shard the model with FSDP).
// Prints the new text (or with --ids the new token ids on one line) on rank 0's stdout.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "titan/core/error.h"
#include "titan/distributed/job.h"
#include "titan/distributed/runtime.h"
#include "titan/infer/generate.h"

namespace {

struct Arguments {
  std::string checkpoint, prompt, tokenizer;
  titan::infer::SamplingOptions sampling;
  bool ids = false;
  int64_t tensor_parallel_degree = 1;
};

constexpr const char* kUsage =
    "usage: titan-generate --checkpoint FILE --prompt TEXT [--max-new-tokens N] "
    "[--temperature T] [--top-k K] [--seed S] [--stop-at-eos] [--ids] [--tokenizer PATH] "
    "[--tp N]";

int64_t parse_int(const std::string& flag, const std::string& text, int64_t at_least) {
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  TITAN_CHECK_INPUT(!text.empty() && *end == '\0' && value >= at_least)
      << flag << ": expected an integer >= " << at_least << ", got '" << text << "'";
  return value;
}

Arguments parse(int argc, char** argv) {
  Arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      TITAN_CHECK_INPUT(i + 1 < argc) << flag << " needs a value; " << kUsage;
      return argv[++i];
    };
    if (flag == "--checkpoint") a.checkpoint = value();
    else if (flag == "--prompt") a.prompt = value();
    else if (flag == "--tokenizer") a.tokenizer = value();
    else if (flag == "--max-new-tokens") a.sampling.max_new_tokens = parse_int(flag, value(), 0);
    else if (flag == "--top-k") a.sampling.top_k = parse_int(flag, value(), 0);
    else if (flag == "--seed") a.sampling.seed = uint64_t(parse_int(flag, value(), 0));
    else if (flag == "--temperature") {
      const std::string text = value();
      char* end = nullptr;
      a.sampling.temperature = std::strtod(text.c_str(), &end);
      TITAN_CHECK_INPUT(!text.empty() && *end == '\0' && a.sampling.temperature >= 0)
          << "--temperature: expected a number >= 0, got '" << text << "'";
    } else if (flag == "--stop-at-eos") a.sampling.stop_at_eos = true;
    else if (flag == "--ids") a.ids = true;
    else if (flag == "--tp") a.tensor_parallel_degree = parse_int(flag, value(), 1);
    else TITAN_CHECK_INPUT(false) << "unknown argument '" << flag << "'; " << kUsage;
  }
  TITAN_CHECK_INPUT(!a.checkpoint.empty() && !a.prompt.empty()) << kUsage;
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<titan::distributed::Runtime> runtime;
  try {
    runtime = std::make_unique<titan::distributed::Runtime>(&argc, &argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return dynamic_cast<const titan::InputError*>(&error) ? 2 : 1;
  }
  titan::distributed::Job job(*runtime);
  Arguments arguments;
  if (!job.setup([&] { arguments = parse(argc, argv); })) return job.exit_code();
  titan::infer::GenerationModel model;
  if (!job.setup([&] {
        model = titan::infer::load_generation_model(arguments.checkpoint, runtime->world(),
                                                    arguments.tokenizer,
                                                    arguments.tensor_parallel_degree);
      })) {
    return job.exit_code();
  }
  std::vector<int64_t> ids;
  if (!job.setup([&] { ids = titan::infer::generate(model, model.encode_prompt(arguments.prompt),
                                                    arguments.sampling); })) {
    return job.exit_code();
  }
  if (runtime->rank() == 0) {
    if (arguments.ids) {
      for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %lld" : "%lld", (long long)ids[i]);
      std::printf("\n");
    } else {
      const std::vector<int32_t> narrow(ids.begin(), ids.end());
      std::printf("%s\n", model.tokenizer->decode(narrow).c_str());
    }
  }
  return 0;
}

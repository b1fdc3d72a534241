#include "titan/models/pipeline_split.h"

#include "titan/core/error.h"

namespace titan::models {
namespace {

constexpr const char* kFirstLess = "parallelism.pipeline_parallel_first_stage_less_layers";
constexpr const char* kLastLess = "parallelism.pipeline_parallel_last_stage_less_layers";

// Every module of the decoder, in model order.
std::vector<std::string> decoder_modules(int n_layers) {
  std::vector<std::string> modules{"tok_embeddings"};
  for (int i = 0; i < n_layers; ++i) modules.push_back("layers." + std::to_string(i));
  modules.push_back("norm");
  modules.push_back("output");
  return modules;
}

}  // namespace

std::string describe_stage(const StageModules& modules) {
  std::string text;
  for (const std::string& m : modules) text += (text.empty() ? "" : ", ") + m;
  return text.empty() ? "(nothing)" : text;
}

std::vector<StageModules> split_decoder_stages(int n_layers, int stages, int first_less,
                                               int last_less) {
  TITAN_CHECK(stages >= 1) << "split_decoder_stages: " << stages << " stages";
  if (stages == 1) return {decoder_modules(n_layers)};
  const int effective = n_layers + first_less + last_less;
  const int per_stage = effective / stages, extra = effective % stages;
  TITAN_CHECK_INPUT(per_stage >= 1)
      << "parallelism: " << stages << " pipeline stages for " << n_layers << " layers + "
      << first_less << " (" << kFirstLess << ") + " << last_less << " (" << kLastLess
      << ") would leave stages empty; use at most " << effective << " stages";
  TITAN_CHECK_INPUT(first_less <= per_stage && last_less <= per_stage)
      << "parallelism: " << stages << " pipeline stages get " << per_stage
      << " layers each, fewer than " << kFirstLess << " " << first_less << " or " << kLastLess
      << " " << last_less << "; lower those or use fewer stages";
  std::vector<StageModules> split(static_cast<size_t>(stages));
  int next_layer = 0;
  for (int s = 0; s < stages; ++s) {
    int layers = per_stage + (s < extra ? 1 : 0);
    if (s == 0) {
      split[0].push_back("tok_embeddings");
      layers -= first_less;
    }
    if (s == stages - 1) layers -= last_less;
    for (; layers > 0 && next_layer < n_layers; --layers) {
      split[size_t(s)].push_back("layers." + std::to_string(next_layer++));
    }
    if (s == stages - 1) {
      split[size_t(s)].push_back("norm");
      split[size_t(s)].push_back("output");
    }
  }
  TITAN_CHECK(next_layer == n_layers) << "split_decoder_stages left layers over";
  return split;
}

void check_decoder_stages(const std::vector<StageModules>& split, int n_layers, int stages) {
  constexpr const char* kKey = "parallelism.module_fqns_per_model_part";
  TITAN_CHECK_INPUT(int(split.size()) == stages)
      << kKey << ": " << split.size() << " stages listed, the schedule runs " << stages
      << " (pipeline_parallel_degree x stages per rank); list " << stages;
  const std::vector<std::string> modules = decoder_modules(n_layers);
  size_t next = 0;  // the module the next listed one must be
  for (size_t s = 0; s < split.size(); ++s) {
    TITAN_CHECK_INPUT(!split[s].empty())
        << kKey << ": stage " << s << " lists no module; every stage needs one";
    for (const std::string& name : split[s]) {
      TITAN_CHECK_INPUT(next < modules.size() && name == modules[next])
          << kKey << ": stage " << s << " lists " << name << " where "
          << (next < modules.size() ? modules[next] : std::string("nothing more"))
          << " comes next; list tok_embeddings, layers.0 .. layers." << n_layers - 1
          << ", norm, output once each, in that order";
      ++next;
    }
    TITAN_CHECK_INPUT(split[s].back() != "norm")
        << kKey << ": stage " << s << " ends with norm; norm and output must share a stage";
  }
  TITAN_CHECK_INPUT(next == modules.size())
      << kKey << ": " << modules[next] << " is in no stage; list every module once";
}

std::vector<StageModules> decoder_stages_for_job(const config::ParallelismSection& p,
                                                 int n_layers, int stages) {
  if (p.module_fqns_per_model_part) {
    std::vector<StageModules> split(p.module_fqns_per_model_part->begin(),
                                    p.module_fqns_per_model_part->end());
    check_decoder_stages(split, n_layers, stages);
    return split;
  }
  return split_decoder_stages(n_layers, stages, int(p.pipeline_parallel_first_stage_less_layers),
                              int(p.pipeline_parallel_last_stage_less_layers));
}

}  // namespace titan::models

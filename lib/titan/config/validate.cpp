// One validation pass over the merged config: every key's own rules first (so a typo in a
// value is reported as such), then the features the values switch on, then the rules
// between keys.
#include <algorithm>
#include <utility>

#include "titan/config/fields.h"
#include "titan/config/load.h"
#include "titan/core/error.h"

namespace titan::config {
namespace {

bool switches_on_missing(const Field& field, const JobConfig& config, WhenMissing when_missing) {
  if (!field.feature) return false;
  const FeatureInfo& info = feature_info(*field.feature);
  return !info.built && info.when_missing == when_missing &&
         field.switches_on(field.get(config), field.default_value());
}

// Rules between keys, each naming the keys and the fix. Every cross-key check of the config
// lives here, so a bad combination fails before anything runs, on every path to a job.
void check_key_combinations(const JobConfig& config) {
  const ProfilingSection& p = config.profiling;
  TITAN_CHECK_INPUT(!p.enable_profiling || p.profiler_warmup + p.profiler_active <= p.profile_freq)
      << "profiling: profiler_warmup " << p.profiler_warmup << " + profiler_active "
      << p.profiler_active << " exceed profile_freq " << p.profile_freq
      << "; raise profile_freq or lower the others";
  const ValidationSection& v = config.validation;
  TITAN_CHECK_INPUT(!v.enable || v.seq_len <= config.training.seq_len)
      << "validation.seq_len " << v.seq_len << " exceeds training.seq_len "
      << config.training.seq_len << " (the model's RoPE table); use at most that";
  const ParallelismSection& par = config.parallelism;
  const int64_t tp = par.tensor_parallel_degree;
  // Sequence parallelism splits every sequence's token rows evenly over the tp ranks.
  auto check_splits = [tp](const char* key, int64_t len) {
    const int64_t below = len / tp * tp;
    TITAN_CHECK_INPUT(len % tp == 0)
        << key << ": " << len << " does not divide by parallelism.tensor_parallel_degree " << tp
        << " (sequence parallel splits each sequence over the tp ranks); use "
        << (below > 0 ? std::to_string(below) + " or " : "") << below + tp
        << ", or set parallelism.enable_sequence_parallel false";
  };
  if (tp > 1 && par.enable_sequence_parallel) {
    check_splits("training.seq_len", config.training.seq_len);
    if (v.enable) check_splits("validation.seq_len", v.seq_len);
  }
  const int64_t cp = par.context_parallel_degree;
  if (cp > 1) {
    TITAN_CHECK_INPUT(par.context_parallel_load_balancer != ContextParallelLoadBalancer::Ptrr)
        << "parallelism.context_parallel_load_balancer: ptrr (torchtitan's balancer for "
        << "flex attention) is not built in titan.cpp; use headtail (its per-document masks "
        << "balance the same way) or None";
    // Head-tail deals 2 cp chunks; sequence parallel then splits a rank's tokens over tp.
    const bool head_tail = par.context_parallel_load_balancer.has_value();
    const int64_t divisor =
        cp * (head_tail ? 2 * tp : (par.enable_sequence_parallel ? tp : 1));
    auto check_chunks = [&](const char* key, int64_t len) {
      const int64_t below = len / divisor * divisor;
      TITAN_CHECK_INPUT(len % divisor == 0)
          << key << ": " << len << " does not divide by " << divisor << " ("
          << (head_tail ? "2 x context_parallel_degree x tensor_parallel_degree: head-tail "
                          "load balancing deals 2 chunks per cp rank"
                        : "context_parallel_degree x tensor_parallel_degree")
          << "); use " << (below > 0 ? std::to_string(below) + " or " : "") << below + divisor;
    };
    check_chunks("training.seq_len", config.training.seq_len);
    if (v.enable) check_chunks("validation.seq_len", v.seq_len);
  }
  TITAN_CHECK_INPUT(!par.enable_async_tensor_parallel || tp == 1 || par.enable_sequence_parallel)
      << "parallelism.enable_async_tensor_parallel: overlaps the sequence-parallel all-gathers "
      << "and reduce-scatters with the matmuls, and parallelism.enable_sequence_parallel is "
      << "false; turn sequence parallel on or async tensor parallel off";
  const StringList& converters = config.model.converters;
  if (std::find(converters.begin(), converters.end(), "quantize.linear.float8") !=
      converters.end()) {
    const LinearFloat8Section& f = config.quantize.linear.float8;
    // torchtitan's rules: the float8 all-gather and its precomputed scales are tensorwise.
    for (const auto& [on, key] : {std::pair{f.enable_fsdp_float8_all_gather,
                                            "enable_fsdp_float8_all_gather"},
                                  std::pair{f.precompute_float8_dynamic_scale_for_fsdp,
                                            "precompute_float8_dynamic_scale_for_fsdp"}}) {
      TITAN_CHECK_INPUT(!on || !f.recipe_name)
          << "quantize.linear.float8." << key << ": works with the tensorwise recipe only (one "
          << "scale per weight), and recipe_name is " << choice_name(*f.recipe_name)
          << "; unset recipe_name or set " << key << " false";
    }
    const bool auto_filter = std::find(f.filter_fqns.begin(), f.filter_fqns.end(),
                                       kAutoFilterSmallKn) != f.filter_fqns.end();
    TITAN_CHECK_INPUT(!auto_filter || f.recipe_name != Float8Recipe::RowwiseWithGwHp)
        << "quantize.linear.float8.filter_fqns: auto_filter_small_kn has thresholds for the "
        << "tensorwise and rowwise recipes, not rowwise_with_gw_hp; remove it or change the recipe";
  }
  const CheckpointSection& c = config.checkpoint;
  TITAN_CHECK_INPUT(!c.enable || !c.last_save_model_only || c.export_dtype != Precision::Float16)
      << "checkpoint.export_dtype: float16 exports are not supported; use bfloat16 or float32";
}

}  // namespace

void validate(const JobConfig& config, const KeyOrigins* origins) {
  auto label = [&](const Field& field) {
    if (origins == nullptr) return field.name;
    const auto found = origins->find(field.name);
    return found == origins->end() ? field.name : found->second;
  };
  for (const Field& field : job_config_fields()) {
    const std::string problem = check_value(field, field.get(config));
    TITAN_CHECK_INPUT(problem.empty()) << label(field) << ": " << problem;
  }
  const CommSection& comm = config.comm;
  TITAN_CHECK_INPUT(comm.fake_rank < comm.fake_world_size)
      << label(*find_field("comm.fake_rank")) << ": " << comm.fake_rank
      << " is not a rank of comm.fake_world_size " << comm.fake_world_size << "; use 0 to "
      << comm.fake_world_size - 1;
  // One line for all of them, the first named in full: a user fixing a big preset learns
  // every key to turn off in one run.
  std::vector<const Field*> refused;
  for (const Field& field : job_config_fields()) {
    if (switches_on_missing(field, config, WhenMissing::Reject)) refused.push_back(&field);
  }
  if (refused.empty()) {
    check_key_combinations(config);
    return;
  }
  const Field& first = *refused.front();
  std::string others;
  for (size_t i = 1; i < refused.size(); ++i) {
    others += (i > 1 ? ", " : "") + refused[i]->name + " (" +
              feature_info(*refused[i]->feature).name + ")";
  }
  const FeatureInfo& missing = feature_info(*first.feature);
  TITAN_FAIL_INPUT() << label(first) << ": " << format_plain(first.get(config)) << " needs "
                     << missing.name << ", which "
                     << (missing.missing_from_build.empty() ? "is not built yet in titan.cpp"
                                                            : missing.missing_from_build)
                     << "; allowed: " << first.feature_off
                     << (others.empty() ? "" : "; also not built yet: " + others);
}

std::vector<std::string> config_warnings(const JobConfig& config) {
  std::vector<std::string> warnings;
  for (const Field& field : job_config_fields()) {
    if (switches_on_missing(field, config, WhenMissing::RunWithoutIt)) {
      warnings.push_back(feature_info(*field.feature).warning);
    }
  }
  return warnings;
}

}  // namespace titan::config

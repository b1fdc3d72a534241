#include "titan/infer/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "titan/ckpt/checkpoint_file.h"
#include "titan/config/load.h"
#include "titan/core/logging.h"
#include "titan/core/philox.h"
#include "titan/models/registry.h"

namespace titan::infer {
namespace {

constexpr uint64_t kSamplingStream = philox_stream_key("titan-generate sampling");

}  // namespace

int64_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options,
                     int64_t position) {
  TITAN_CHECK(vocab > 0) << "sample_token: empty vocabulary";
  if (options.temperature <= 0) return int64_t(std::max_element(logits, logits + vocab) - logits);
  // Candidates: the top_k largest logits (ties keep the lower id), all when top_k is 0.
  std::vector<int64_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const int64_t k = options.top_k > 0 ? std::min(options.top_k, vocab) : vocab;
  auto larger = [logits](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), larger);
  ids.resize(size_t(k));
  const double top = logits[ids.front()];
  std::vector<double> weights(ids.size());
  double total = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    weights[i] = std::exp((double(logits[ids[i]]) - top) / options.temperature);
    total += weights[i];
  }
  const double u = double(philox_uniform(options.seed, kSamplingStream, position, 0.0f, 1.0f)) * total;
  double cumulative = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    cumulative += weights[i];
    if (u < cumulative) return ids[i];
  }
  return ids.back();
}

std::vector<int64_t> GenerationModel::encode_prompt(const std::string& text) const {
  const std::vector<int32_t> ids = tokenizer->encode(text, data::Framing::Bos);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

GenerationModel load_generation_model(const std::string& checkpoint,
                                      distributed::Communicator& world,
                                      const std::string& tokenizer_path,
                                      int64_t tensor_parallel_degree) {
  GenerationModel g;
  const ckpt::CheckpointMeta meta = ckpt::read_checkpoint_meta(checkpoint, world);
  g.step = meta.step;
  config::apply_yaml_text(g.config, meta.config_yaml, checkpoint + " (config_yaml)");
  // Every rank holds a shard of the model and sees the whole sequence (no data split).
  config::ParallelismSection parallelism;
  parallelism.tensor_parallel_degree = tensor_parallel_degree;
  g.mesh = std::make_unique<distributed::Mesh>(
      distributed::mesh_shape_from_config(parallelism, world.size()), world);
  const models::ModelFamily& family = models::model_family(g.config.model.name);
  config::JobConfig on_this_mesh = g.config;
  on_this_mesh.parallelism = parallelism;
  family.summarize(on_this_mesh);  // the model's own rules for the tp degree (exit 2)
  nn::ParameterLayout layout = g.mesh->parameter_layout(Device::cpu(), DType::F32);
  if (tensor_parallel_degree > 1) {
    g.tensor_parallel = std::make_unique<distributed::TensorParallelGroup>(
        g.mesh->tensor_group(distributed::MeshDim::tp),
        distributed::TensorParallelOptions{false, true, false});
    layout.tensor_parallel = g.tensor_parallel.get();
  }
  g.model = family.build(g.config, layout);
  // Default resharding keeps the head unit gathered after forward, which logits() reads.
  g.fsdp = std::make_unique<distributed::FullyShardedDataParallel>(
      g.model->units(), g.mesh->dp_shard(), g.mesh->dp_replicate(),
      config::ReshardAfterForward::Default);
  g.model->set_unit_hooks(g.fsdp.get());
  std::vector<ckpt::TensorPiece> pieces;
  for (nn::Parameter* p : g.model->parameters()) {
    pieces.push_back({"model/" + p->name(), p->global_shape(), p->local_box(), p->shard()});
  }
  ckpt::read_checkpoint_tensors(checkpoint, world, pieces);
  const std::string tokenizer_source =
      !tokenizer_path.empty() ? tokenizer_path
                              : g.config.model.tokenizer_path.value_or(g.config.model.hf_assets_path);
  g.tokenizer = std::make_unique<data::Tokenizer>(data::Tokenizer::load(tokenizer_source));
  TITAN_CHECK_INPUT(g.tokenizer->vocab_size() <= g.model->vocab_size())
      << "tokenizer " << tokenizer_source << " has " << g.tokenizer->vocab_size()
      << " tokens, more than the model's vocab_size " << g.model->vocab_size()
      << "; pass the tokenizer the checkpoint was trained with (--tokenizer)";
  // A block-causal model masks at the tokenizer's EOS, as its training data did.
  g.model->set_document_end(g.tokenizer->eos_id());
  return g;
}

std::vector<int64_t> generate(GenerationModel& g, std::vector<int64_t> tokens,
                              const SamplingOptions& options) {
  TITAN_CHECK_INPUT(!tokens.empty()) << "titan-generate: the prompt has no tokens";
  const int64_t vocab = g.model->vocab_size(), limit = g.config.training.seq_len;
  TITAN_CHECK_INPUT(int64_t(tokens.size()) + options.max_new_tokens <= limit)
      << "prompt (" << tokens.size() << " tokens) + --max-new-tokens " << options.max_new_tokens
      << " exceeds the model's sequence length " << limit << " (training.seq_len)";
  distributed::Communicator& world = g.mesh->world();
  std::vector<int64_t> generated;
  for (int64_t n = 0; n < options.max_new_tokens; ++n) {
    const int64_t T = int64_t(tokens.size());
    Tensor input = Tensor::empty({1, T}, DType::I64), labels = Tensor::empty({1, T}, DType::I64);
    std::copy(tokens.begin(), tokens.end(), input.mutable_data<int64_t>());
    std::fill_n(labels.mutable_data<int64_t>(), T, int64_t(-100));  // no loss wanted
    std::unique_ptr<models::ActivationRecord> record = g.model->new_record();
    g.model->forward(input, labels, *record);
    const Tensor logits = g.model->logits(*record);  // [1, T, V]
    Tensor next = Tensor::empty({1}, DType::I64);
    if (world.rank() == 0) {
      next.mutable_data<int64_t>()[0] =
          sample_token(logits.data<float>() + (T - 1) * vocab, vocab, options, T);
    }
    world.broadcast(next, 0).wait();
    const int64_t id = next.data<int64_t>()[0];
    generated.push_back(id);
    tokens.push_back(id);
    if (options.stop_at_eos && id == g.tokenizer->eos_id()) break;
  }
  return generated;
}

}  // namespace titan::infer

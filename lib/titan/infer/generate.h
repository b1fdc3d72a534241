// Text generation from a checkpoint (titan-generate): the model is rebuilt from the
// checkpoint's own config (its family, by model.name), sharded over the ranks it runs on
// (FSDP, as in training, so a model too large for one rank still samples; with
// tensor_parallel_degree > 1 tensor parallel within groups of that many ranks, without
// sequence parallel since the sequence grows a token at a time), loaded box by
// box, and run one token at a time: each step a full forward over the sequence so far (no
// KV cache: simple, and cheap at the lengths this is for), then the next token from the
// last position's logits.
//
//   GenerationModel model = load_generation_model("out/checkpoint/step-100.h5", world);
//   std::vector<int64_t> prompt = model.encode_prompt("Four score");   // BOS first
//   std::vector<int64_t> ids = generate(model, prompt, options);       // exactly N new ids
//   std::string text = model.tokenizer.decode(ids);
//
// Sampling: temperature 0 is greedy (the first largest logit); otherwise softmax(logits /
// temperature) over the top_k largest (all when 0), drawn with Philox(seed, position), so
// a seed gives the same text on any mesh. Rank 0 draws and broadcasts each token.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/data/tokenizer.h"
#include "titan/distributed/fsdp.h"
#include "titan/distributed/mesh.h"
#include "titan/distributed/tensor_parallel.h"
#include "titan/models/model.h"

namespace titan::infer {

struct SamplingOptions {
  int64_t max_new_tokens = 32;
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: every token
  uint64_t seed = 0;
  bool stop_at_eos = false;  // otherwise exactly max_new_tokens, EOS included
};

// The token after `logits` [V] at sequence position `position` (the draw's Philox index).
int64_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options,
                     int64_t position);

struct GenerationModel {
  config::JobConfig config;  // the checkpoint's
  std::unique_ptr<distributed::Mesh> mesh;
  std::unique_ptr<distributed::TensorParallelGroup> tensor_parallel;  // tp > 1
  std::unique_ptr<models::Model> model;  // of the checkpoint's model.name family
  std::unique_ptr<distributed::FullyShardedDataParallel> fsdp;
  std::unique_ptr<data::Tokenizer> tokenizer;
  int64_t step = 0;  // the checkpoint's

  // BOS, then the text's ids (torchtitan's generation script frames prompts so).
  std::vector<int64_t> encode_prompt(const std::string& text) const;
};

// Collective over `world`. A missing or foreign checkpoint, or a tokenizer that is not
// where the checkpoint's config says (model.hf_assets_path; `tokenizer_path` overrides),
// is an InputError naming it.
GenerationModel load_generation_model(const std::string& checkpoint,
                                      distributed::Communicator& world,
                                      const std::string& tokenizer_path = "",
                                      int64_t tensor_parallel_degree = 1);

// The new token ids (collective over the model's mesh).
std::vector<int64_t> generate(GenerationModel& model, std::vector<int64_t> prompt,
                              const SamplingOptions& options);

}  // namespace titan::infer

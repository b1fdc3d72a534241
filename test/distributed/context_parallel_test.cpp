// Context parallelism against one rank and against float64: ring attention (both rotate
// methods, causal and per-document) equals full attention; the head-tail split balances
// the causal work; training under cp alone and composed with FSDP, HSDP, TP and PP, causal
// and block-causal, validation, and checkpoints moved to and from FSDP equal one rank's;
// bad input is exit 2 with one line.
// Run by CTest under mpirun on 2 and 4 ranks (test/CMakeLists.txt); each layout runs once.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "distributed_test_main.h"
#include "support/attention_reference.h"
#include "support/gradient_check.h"
#include "tiny_training_job.h"
#include "training_run.h"
#include "titan/build_config.h"
#include "titan/config/load.h"
#include "titan/core/allocator.h"
#include "titan/data/shards.h"
#include "titan/distributed/context_parallel.h"
#include "titan/distributed/mesh.h"
#include "titan/models/registry.h"
#include "titan/train/trainer.h"

namespace titan::distributed {
namespace {

namespace fs = std::filesystem;
using nn::SequenceSplit;
using testing::Values;

// ---------------------------------------------------------------------------------------
// Ring attention against float64 full attention
// ---------------------------------------------------------------------------------------

constexpr int64_t kEos = 7;

struct RingShape {
  int64_t B = 2, T = 256, Hq = 4, Hkv = 2, hd = 16;
};

// Sequences of token 1 with an EOS at each of `ends` (per batch row): documents.
Tensor tokens_with_ends(const RingShape& s, const std::vector<std::vector<int64_t>>& ends) {
  Tensor tokens = Tensor::empty({s.B, s.T}, DType::I64);
  int64_t* t = tokens.mutable_data<int64_t>();
  std::fill(t, t + s.B * s.T, 1);
  for (int64_t b = 0; b < s.B; ++b) {
    for (const int64_t end : ends[size_t(b)]) t[b * s.T + end] = kEos;
  }
  return tokens;
}

// This rank's positions in the whole sequence, as the gathering of time rows takes them.
std::vector<int64_t> times_of(const ContextParallelGroup& cp, int64_t T) {
  const std::vector<int32_t> positions = cp.positions_of(cp.rank(), T);
  return {positions.begin(), positions.end()};
}

struct RingRun {
  Tensor out, lse, dq, dk, dv;
  int64_t forward_transient_bytes = 0, backward_transient_bytes = 0;
};

// This rank's queries, keys and values of the whole q, k, v, through the cp group.
RingRun run_ring(const ContextParallelGroup& cp, const RingShape& s, const Tensor& tokens,
                 bool documents, const Values& q, const Values& k, const Values& v,
                 const Values& dout, float scale) {
  const std::vector<int64_t> mine = times_of(cp, s.T);
  const int64_t n = int64_t(mine.size());
  const Tensor freqs = Tensor::zeros({s.T, 1, 2}, DType::F32);  // no RoPE here
  const nn::SequenceLayout seq = nn::sequence_layout(
      cp, tokens, freqs, documents ? std::optional<int32_t>(kEos) : std::nullopt, Device::cpu());
  auto local = [&](const Values& whole, int64_t heads) {
    return testing::from_values(testing::gather_time_btw(whole, s.B, s.T, heads * s.hd, mine),
                                {s.B, n, heads, s.hd});
  };
  const Tensor lq = local(q, s.Hq), lk = local(k, s.Hkv), lv = local(v, s.Hkv);
  const Tensor ldout = local(dout, s.Hq);
  RingRun run;
  run.out = Tensor::empty(lq.shape(), DType::F32);
  run.lse = Tensor::empty({s.B, s.Hq, n}, DType::F32);
  run.dq = Tensor::empty(lq.shape(), DType::F32);
  run.dk = Tensor::empty(lk.shape(), DType::F32);
  run.dv = Tensor::empty(lv.shape(), DType::F32);
  Allocator& allocator = allocator_for(Device::cpu());
  allocator.reset_peak();
  int64_t before = allocator.stats().current_bytes;
  cp.attention_forward(lq, lk, lv, scale, seq, run.out, run.lse);
  run.forward_transient_bytes = allocator.stats().peak_bytes - before;
  allocator.reset_peak();
  before = allocator.stats().current_bytes;
  cp.attention_backward(ldout, lq, lk, lv, run.out, run.lse, scale, seq, run.dq, run.dk, run.dv);
  run.backward_transient_bytes = allocator.stats().peak_bytes - before;
  return run;
}

struct MaskCase {
  const char* name;
  bool documents;
  std::vector<std::vector<int64_t>> ends;  // EOS positions per batch row
};

void check_ring_attention(SequenceSplit split) {
  const int n = test_world().size();
  const RingShape s;
  const int64_t chunk = s.T / (2 * n);
  const std::vector<MaskCase> cases = {
      {"causal", false, {{}, {}}},
      // Uneven documents; one ends right before a chunk boundary, so the next starts on it;
      // a one-token document; row 1 cut elsewhere.
      {"documents", true, {{chunk - 1, chunk + 40, chunk + 41, 3 * chunk + 5}, {17, 200}}},
      {"one document", true, {{}, {}}},
  };
  const float scale = float(1.0 / std::sqrt(double(s.hd)));
  const testing::AttentionDims64 dims{s.B, s.T, s.T, s.Hq, s.Hkv, s.hd};
  const Values q = testing::random_values(s.B * s.T * s.Hq * s.hd, 1);
  const Values k = testing::random_values(s.B * s.T * s.Hkv * s.hd, 2);
  const Values v = testing::random_values(s.B * s.T * s.Hkv * s.hd, 3);
  const Values dout = testing::random_values(s.B * s.T * s.Hq * s.hd, 4);
  const int64_t full_kv_bytes = 2 * s.B * s.T * s.Hkv * s.hd * int64_t(sizeof(float));
  for (const MaskCase& mask_case : cases) {
    const Tensor tokens = tokens_with_ends(s, mask_case.ends);
    std::vector<int64_t> ids(tokens.data<int64_t>(), tokens.data<int64_t>() + s.B * s.T);
    const std::vector<int32_t> doc = testing::documents_at_eos(ids, s.B, s.T, kEos);
    const bool documents = mask_case.documents;
    testing::AttentionLayout layout;
    if (documents) layout.q_document = layout.k_document = doc;
    const testing::AttentionMaskFn mask =
        testing::reference_mask(dims, ops::AttentionMask::Causal, layout);
    const testing::AttentionResult64 want = testing::reference_masked_attention(dims, mask, scale,
                                                                                q, k, v);
    const testing::AttentionGrads64 want_grads =
        testing::reference_masked_attention_backward(dims, mask, scale, q, k, v, dout);
    for (const RotateMethod rotate : {RotateMethod::AllGather, RotateMethod::AllToAll}) {
      const bool ring = rotate == RotateMethod::AllToAll;
      SCOPED_TRACE(std::string(mask_case.name) + (ring ? ", alltoall" : ", allgather"));
      const ContextParallelGroup cp(test_world(), split, rotate);
      const RingRun run = run_ring(cp, s, tokens, documents, q, k, v, dout, scale);
      const std::vector<int64_t> mine = times_of(cp, s.T);
      auto local = [&](const Values& whole, int64_t heads) {
        return testing::gather_time_btw(whole, s.B, s.T, heads * s.hd, mine);
      };
      testing::expect_close(testing::to_values(run.out), local(want.out, s.Hq), 2e-5, "out");
      testing::expect_close(testing::to_values(run.lse),
                            testing::gather_time_bht(want.lse, s.B, s.Hq, s.T, mine), 2e-5, "lse");
      testing::expect_close(testing::to_values(run.dq), local(want_grads.dq, s.Hq), 5e-5, "dq");
      testing::expect_close(testing::to_values(run.dk), local(want_grads.dk, s.Hkv), 5e-5, "dk");
      testing::expect_close(testing::to_values(run.dv), local(want_grads.dv, s.Hkv), 5e-5, "dv");
      // The ring holds two ranks' K and V (and their gradient sums) at a time, never the
      // whole sequence's at cp 4; allgather holds every rank's.
      if (ring && n >= 4) {
        EXPECT_LT(run.forward_transient_bytes, full_kv_bytes);
        EXPECT_LT(run.backward_transient_bytes, 2 * full_kv_bytes);
      }
      if (!ring) {
        EXPECT_GE(run.forward_transient_bytes, full_kv_bytes);
        EXPECT_GE(run.backward_transient_bytes, 2 * full_kv_bytes);
      }
    }
  }
}

TEST(ContextParallel, HeadTailRingAttentionEqualsFloat64FullAttention) {
  check_ring_attention(SequenceSplit::HeadTail);
}

TEST(ContextParallel, ContiguousRingAttentionEqualsFloat64FullAttention) {
  check_ring_attention(SequenceSplit::Contiguous);
}

// Per-rank attention work of a causal forward and backward: equal under head-tail, the
// last rank's far above the first's under the contiguous split.
TEST(ContextParallel, HeadTailBalancesTheCausalWork) {
  RingShape s;
  s.B = 1;
  s.T = 1024;  // chunks of 128 or 256 tokens: whole 64-token tiles
  const float scale = 0.25f;
  const Values q = testing::random_values(s.B * s.T * s.Hq * s.hd, 5);
  const Values kv = testing::random_values(s.B * s.T * s.Hkv * s.hd, 6);
  const Tensor tokens = tokens_with_ends(s, {{}});
  for (const SequenceSplit split : {SequenceSplit::HeadTail, SequenceSplit::Contiguous}) {
    const ContextParallelGroup cp(test_world(), split, RotateMethod::AllToAll);
    ops::reset_attention_work();
    run_ring(cp, s, tokens, false, q, kv, kv, q, scale);
    const ops::AttentionWork work = ops::attention_work();
    const double scores = double(work.forward_scores + work.backward_scores);
    const double most = all_reduce_scalar(test_world(), scores, ReduceOp::Max);
    const double least = all_reduce_scalar(test_world(), scores, ReduceOp::Min);
    if (split == SequenceSplit::HeadTail) {
      EXPECT_LE(most, 1.01 * least) << "head-tail: per-rank score counts " << least << " to "
                                    << most;
    } else {
      EXPECT_GT(most, 1.5 * least) << "contiguous: per-rank score counts " << least << " to "
                                   << most;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Training against one rank
// ---------------------------------------------------------------------------------------

struct Layout {
  std::string name;
  int64_t cp = 2, dp_shard = 1, dp_replicate = 1, tp = 1, pp = 1;
  config::ContextParallelRotateMethod rotate = config::ContextParallelRotateMethod::AllGather;
  bool head_tail = true;
  int64_t world() const { return cp * dp_shard * dp_replicate * tp * pp; }
};

constexpr int64_t kGlobalBatch = 4;

config::JobConfig cp_job(const Layout& layout, const std::string& dataset_path = {}) {
  config::JobConfig c = tiny_training_job("titan_cp_test_" + layout.name);
  if (!dataset_path.empty()) c.training.dataset_path = dataset_path;
  const int64_t dp = layout.dp_shard * layout.dp_replicate;
  c.training.global_batch_size = kGlobalBatch;
  c.training.local_batch_size = kGlobalBatch / dp;
  config::ParallelismSection& p = c.parallelism;
  p.context_parallel_degree = layout.cp;
  p.data_parallel_shard_degree = layout.dp_shard;
  p.data_parallel_replicate_degree = layout.dp_replicate;
  p.tensor_parallel_degree = layout.tp;
  p.pipeline_parallel_degree = layout.pp;
  p.context_parallel_rotate_method = layout.rotate;
  if (!layout.head_tail) p.context_parallel_load_balancer = std::nullopt;
  if (layout.pp > 1) {
    p.pipeline_parallel_schedule = config::PipelineSchedule::OneForwardOneBackward;
    p.pipeline_parallel_microbatch_size = c.training.local_batch_size / 2;
  }
  return c;
}

// One rank on the same global batch, once per (flavor, mask, dataset).
const TrainingRun& alone(const config::JobConfig& like) {
  static auto& runs = *new std::map<std::string, TrainingRun>;  // outlives no allocator
  const config::AttentionMaskType mask =
      like.model.attn_mask_type.value_or(config::AttentionMaskType::Causal);
  const std::string key = like.model.flavor + "|" + std::string(config::choice_name(mask)) + "|" +
                          like.training.dataset_path.value_or("");
  if (!runs.count(key)) {
    config::JobConfig c = tiny_training_job("titan_cp_test_alone");
    c.model = like.model;
    c.training.dataset_path = like.training.dataset_path;
    c.training.global_batch_size = c.training.local_batch_size = kGlobalBatch;
    runs[key] = train_run(c, nullptr);
  }
  return runs.at(key);
}

void check_layout(const config::JobConfig& config, const Layout& layout) {
  SCOPED_TRACE(layout.name);
  Mesh mesh(mesh_shape_from_config(config.parallelism, layout.world()), test_world());
  expect_same_run(train_run(config, &mesh), alone(config));
}

TEST(ContextParallel, TrainingEqualsOneRank) {
  const int64_t world = test_world().size();
  using config::ContextParallelRotateMethod;
  std::vector<Layout> layouts;
  if (world == 2) {
    layouts = {{"cp2_allgather", 2}, {"cp2_alltoall", 2, 1, 1, 1, 1,
                                      ContextParallelRotateMethod::AllToAll}};
  } else if (world == 4) {
    layouts = {
        {"cp4_alltoall", 4, 1, 1, 1, 1, ContextParallelRotateMethod::AllToAll},
        {"cp4_contiguous", 4, 1, 1, 1, 1, ContextParallelRotateMethod::AllGather, false},
        {"fsdp2_cp2", 2, 2},
        {"hsdp_replicate2_cp2", 2, 1, 2, 1, 1, ContextParallelRotateMethod::AllToAll},
        {"tp2_cp2", 2, 1, 1, 2},
        {"pp2_cp2", 2, 1, 1, 1, 2, ContextParallelRotateMethod::AllToAll},
    };
  } else {
    GTEST_SKIP() << "needs 2 or 4 ranks";
  }
  for (const Layout& layout : layouts) check_layout(cp_job(layout), layout);
}

// A shard folder of short documents: the sotu tokens cut into documents of 5 to 45 tokens,
// so that every window of 64 holds several EOS.
std::string short_documents_dataset() {
  const fs::path folder = fs::temp_directory_path() /
                          ("titan_cp_test_documents_rank" + std::to_string(test_world().rank()));
  fs::remove_all(folder);
  fs::create_directories(folder);
  const data::ShardSet sotu =
      data::ShardSet::open(testing::assets_path("data/sotu"), data::ShardSplit::Train, 2048);
  const std::span<const uint32_t> tokens = sotu.shard(0).tokens();
  {
    std::ofstream jsonl(folder / "documents.jsonl");
    size_t at = 0;
    for (int d = 0; d < 400; ++d) {
      const size_t length = size_t(5 + (d * 17) % 41);
      std::string text;
      for (size_t i = 0; i < length; ++i) text += std::to_string(tokens[at + i]) + " ";
      at += length;
      jsonl << "{\"text\": \"" << text << "\"}\n";
    }
  }
  data::TokenizeInput input;
  input.encode = [](std::string_view text) {  // the ids themselves, as written above
    std::vector<int32_t> ids;
    std::istringstream words{std::string(text)};
    for (int32_t id; words >> id;) ids.push_back(id);
    return ids;
  };
  input.bos_id = int32_t(sotu.manifest().bos_id);
  input.eos_id = int32_t(sotu.manifest().eos_id);
  input.vocab_size = 2048;
  input.files = {(folder / "documents.jsonl").string()};
  input.out_dir = (folder / "shards").string();
  input.validation_fraction = 0.1;
  input.tokenizer_description = "sotu-2k ids (test)";
  data::tokenize_to_shards(input);
  return (folder / "shards").string();
}

// Block-causal under cp 2 (documents crossing the chunks) equals one rank's block-causal
// run, which differs from the causal one: the mask acts.
TEST(ContextParallel, BlockCausalTrainingEqualsOneRank) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const std::string documents = short_documents_dataset();
  Layout layout{"cp2_block_causal", 2, 1, 1, 1, 1,
                config::ContextParallelRotateMethod::AllToAll};
  config::JobConfig c = cp_job(layout, documents);
  c.model.attn_mask_type = config::AttentionMaskType::BlockCausal;
  check_layout(c, layout);
  config::JobConfig causal = c;
  causal.model.attn_mask_type = config::AttentionMaskType::Causal;
  EXPECT_GT(std::abs(alone(causal).steps[0].loss - alone(c).steps[0].loss), 1e-4);
}

// Validation under cp 2: the same loss over the same windows as one rank.
TEST(ContextParallel, ValidationEqualsOneRank) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const Layout layout{"validation_cp2", 2};
  const config::JobConfig config = with_validation(cp_job(layout), kGlobalBatch);
  Mesh mesh(mesh_shape_from_config(config.parallelism, 2), test_world());
  train::Trainer cp(config, &mesh);
  cp.train();
  config::JobConfig one = tiny_training_job("titan_cp_test_validation_alone");
  one.training.global_batch_size = one.training.local_batch_size = kGlobalBatch;
  train::Trainer alone_trainer(with_validation(one, kGlobalBatch));
  alone_trainer.train();
  const train::ValidationResult a = alone_trainer.validate(), b = cp.validate();
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NEAR(b.loss, a.loss, 1e-5 * a.loss);
}

#if TITAN_HAVE_HDF5
// A checkpoint saved under CP 2 resumes under FSDP 2 and the other way round: the second
// half of the run is the one-rank run's.
TEST(ContextParallel, CheckpointsMoveBetweenContextParallelAndFsdp) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const Layout cp2{"ckpt_cp2", 2}, fsdp2{"ckpt_fsdp2", 1, 2};
  int index = 0;
  for (const auto& [save, resume] : {std::pair{cp2, fsdp2}, std::pair{fsdp2, cp2}}) {
    SCOPED_TRACE(save.name + " -> " + resume.name);
    const fs::path folder =
        fs::temp_directory_path() / ("titan_cp_test_ckpt" + std::to_string(index++));
    if (test_world().rank() == 0) fs::remove_all(folder);
    test_world().barrier().wait();
    auto checkpointed = [&](const Layout& layout) {
      config::JobConfig c = cp_job(layout);
      c.job.dump_folder = folder.string();
      c.checkpoint.enable = true;
      c.checkpoint.interval = 5;
      return c;
    };
    {
      const config::JobConfig c = checkpointed(save);
      Mesh mesh(mesh_shape_from_config(c.parallelism, 2), test_world());
      train::Trainer trainer(c, &mesh);
      for (int s = 0; s < 5; ++s) trainer.train_step();
    }
    const config::JobConfig c = checkpointed(resume);
    Mesh mesh(mesh_shape_from_config(c.parallelism, 2), test_world());
    train::Trainer resumed(c, &mesh);
    const std::vector<train::StepResult> steps = resumed.train();
    ASSERT_EQ(steps.size(), 5u);
    const TrainingRun& reference = alone(c);
    for (size_t s = 0; s < steps.size(); ++s) {
      const train::StepResult& want = reference.steps[s + 5];
      EXPECT_EQ(steps[s].step, want.step);
      EXPECT_NEAR(steps[s].loss, want.loss, 1e-5 * want.loss) << "step " << want.step;
    }
  }
}
#endif

// Bad input: one line naming the key and the fix, exit 2 (InputError), before training.
TEST(ContextParallel, BadInputIsOneLine) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  auto message_of = [](const std::function<void()>& run) -> std::string {
    try {
      run();
    } catch (const InputError& e) {
      return e.what();
    }
    return "(no InputError)";
  };
  config::JobConfig odd = cp_job({"bad_seq_len", 2});
  odd.training.seq_len = 62;
  EXPECT_NE(message_of([&] { config::validate(odd); }).find("training.seq_len: 62 does not "
                                                             "divide by 4"),
            std::string::npos);
  config::JobConfig three = cp_job({"bad_cp", 3});
  EXPECT_NE(message_of([&] { mesh_shape_from_config(three.parallelism, 2); })
                .find("context_parallel_degree 3"),
            std::string::npos);
  config::JobConfig ptrr = cp_job({"bad_ptrr", 2});
  ptrr.parallelism.context_parallel_load_balancer = config::ContextParallelLoadBalancer::Ptrr;
  EXPECT_NE(message_of([&] { config::validate(ptrr); }).find("ptrr"), std::string::npos);
  config::JobConfig synthetic = cp_job({"bad_documents", 2});
  synthetic.model.flavor = "tiny";
  synthetic.model.attn_mask_type = config::AttentionMaskType::BlockCausal;
  synthetic.training.dataset = "synthetic";
  synthetic.training.dataset_path = std::nullopt;
  Mesh mesh(mesh_shape_from_config(synthetic.parallelism, 2), test_world());
  const std::string line = message_of([&] { train::Trainer trainer(synthetic, &mesh); });
  EXPECT_NE(line.find("block_causal"), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
}

}  // namespace
}  // namespace titan::distributed

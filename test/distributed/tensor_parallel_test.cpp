// Tensor parallelism against one rank: tp alone (with and without sequence parallel, with
// gathered logits, asynchronous) and composed with FSDP, HSDP: the same global batch gives
// the same losses, grad norms and final parameters as one rank; the communicator counters
// show the layout's collectives and that loss parallel never moves the logits. Run by
// CTest under mpirun on 2, 4 and 8 ranks (test/CMakeLists.txt); each layout runs once and
// every rank also trains the one-rank reference on its own.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "distributed_test_main.h"
#include "tiny_training_job.h"
#include "training_run.h"
#include "support/gradient_check.h"
#include "support/train_process.h"
#include "titan/build_config.h"
#include "titan/ckpt/safetensors.h"
#include "titan/core/allocator.h"
#include "titan/core/threads.h"
#include "titan/distributed/mesh.h"
#include "titan/models/llama3/args.h"
#include "titan/models/llama3/parallelize.h"
#include "titan/models/registry.h"
#include "titan/nn/attention.h"
#include "titan/nn/feed_forward.h"
#include "titan/ops/rope.h"
#include "titan/nn/vocab_parallel.h"
#include "titan/ops/cross_entropy.h"
#include "titan/distributed/tensor_parallel.h"
#include "titan/train/trainer.h"
#if TITAN_HAVE_HDF5
#include "titan/ckpt/hdf5/hf_convert.h"
#endif

namespace titan::distributed {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kSteps = kTinyTrainingSteps;
constexpr int64_t kGlobalBatch = 4;

struct Layout {
  std::string name;
  int64_t dp_replicate = 1, dp_shard = 1, tp = 1;
  bool sequence_parallel = true, loss_parallel = true, async = false;
  int64_t world() const { return dp_replicate * dp_shard * tp; }
};

config::JobConfig tiny_job(const Layout& layout) {
  config::JobConfig c = tiny_training_job("titan_tp_test_" + layout.name);
  c.training.global_batch_size = kGlobalBatch;
  c.training.local_batch_size = kGlobalBatch / (layout.dp_replicate * layout.dp_shard);
  c.parallelism.data_parallel_replicate_degree = layout.dp_replicate;
  c.parallelism.data_parallel_shard_degree = layout.dp_shard;
  c.parallelism.tensor_parallel_degree = layout.tp;
  c.parallelism.enable_sequence_parallel = layout.sequence_parallel;
  c.parallelism.disable_loss_parallel = !layout.loss_parallel;
  c.parallelism.enable_async_tensor_parallel = layout.async;
  return c;
}

const TrainingRun& alone() {
  static const TrainingRun run = [] {
    Layout one{"alone"};
    one.sequence_parallel = false;
    return train_run(tiny_job(one), nullptr);
  }();
  return run;
}

void check_layout(const Layout& layout) {
  if (test_world().size() != layout.world()) GTEST_SKIP() << "needs " << layout.world() << " ranks";
  const config::JobConfig config = tiny_job(layout);
  Mesh mesh(mesh_shape_from_config(config.parallelism, layout.world()), test_world());
  const TrainingRun run = train_run(config, &mesh);
  ASSERT_EQ(run.steps.size(), size_t(kSteps));
  expect_same_run(run, alone());
}

TEST(TensorParallel, Tp2EqualsOneRank) { check_layout({"tp2", 1, 1, 2}); }

TEST(TensorParallel, Tp2WithoutSequenceParallel) {
  Layout layout{"tp2_nosp", 1, 1, 2};
  layout.sequence_parallel = false;
  check_layout(layout);
}

TEST(TensorParallel, Tp2WithGatheredLogits) {
  Layout layout{"tp2_nolp", 1, 1, 2};
  layout.loss_parallel = false;
  check_layout(layout);
}

TEST(TensorParallel, AsyncTp2) {
  Layout layout{"tp2_async", 1, 1, 2};
  layout.async = true;
  check_layout(layout);
}

// The ring decomposition against the synchronous collectives on the same layout: the same
// losses and grad norms within 1e-6 (not bit for bit: the ring adds the partial sums in
// another order).
TEST(TensorParallel, AsyncTp2MatchesSyncTp2) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  Layout sync{"tp2_sync", 1, 1, 2}, ring{"tp2_ring", 1, 1, 2};
  ring.async = true;
  Mesh mesh(mesh_shape_from_config(tiny_job(sync).parallelism, 2), test_world());
  const TrainingRun a = train_run(tiny_job(sync), &mesh), b = train_run(tiny_job(ring), &mesh);
  for (size_t s = 0; s < a.steps.size(); ++s) {
    EXPECT_NEAR(b.steps[s].loss, a.steps[s].loss, 1e-6 * a.steps[s].loss) << "step " << s + 1;
    EXPECT_NEAR(b.steps[s].grad_norm, a.steps[s].grad_norm, 1e-6 * a.steps[s].grad_norm)
        << "step " << s + 1;
  }
}

// bf16 mixed precision over tp, where the CPU has AVX512_BF16: the row reductions move bf16
// (MPI's bf16 sums), and without loss parallel the gathered logits' dlogits round to bf16.
// Against one rank in bf16, within the bf16 bounds of the GPU's tests (losses 2e-2, grad
// norms 5%): the ranks round partial sums the one rank never forms.
TEST(TensorParallel, Tp2InBf16StaysNearOneRankInBf16) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  if (!cpu_has_bf16()) GTEST_SKIP() << "no AVX512_BF16: bf16 is refused on this CPU";
  auto bf16 = [](config::JobConfig c) {
    c.training.mixed_precision_param = config::Precision::Bfloat16;
    c.given_keys.insert("training.mixed_precision_param");
    return c;
  };
  Layout one{"alone_bf16"};
  one.sequence_parallel = false;
  const TrainingRun reference = train_run(bf16(tiny_job(one)), nullptr);
  for (const bool loss_parallel : {true, false}) {
    Layout layout{loss_parallel ? "tp2_bf16" : "tp2_nolp_bf16", 1, 1, 2};
    layout.loss_parallel = loss_parallel;
    const config::JobConfig config = bf16(tiny_job(layout));
    Mesh mesh(mesh_shape_from_config(config.parallelism, 2), test_world());
    const TrainingRun run = train_run(config, &mesh);
    ASSERT_EQ(run.steps.size(), reference.steps.size());
    for (size_t s = 0; s < run.steps.size(); ++s) {
      const train::StepResult &a = reference.steps[s], &b = run.steps[s];
      EXPECT_NEAR(b.loss, a.loss, 2e-2) << layout.name << " step " << s + 1;
      EXPECT_NEAR(b.grad_norm, a.grad_norm, 0.05 * a.grad_norm) << layout.name << " step " << s + 1;
    }
  }
}

// tiny has 2 kv heads: tp 4 shares each kv head between two ranks.
TEST(TensorParallel, Tp4SharesKvHeads) { check_layout({"tp4", 1, 1, 4}); }

TEST(TensorParallel, FsdpTwoByTpTwo) { check_layout({"fsdp2_tp2", 1, 2, 2}); }

TEST(TensorParallel, HsdpTwoByFsdpTwoByTpTwo) { check_layout({"hsdp_tp", 2, 2, 2}); }

// Validation runs the TP model's forward: the loss over the same windows is one rank's.
TEST(TensorParallel, ValidationEqualsOneRank) {
  if (test_world().size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const config::JobConfig config =
      with_validation(tiny_job({"validation_tp2", 1, 1, 2}), kGlobalBatch);
  Mesh mesh(mesh_shape_from_config(config.parallelism, 2), test_world());
  train::Trainer tp(config, &mesh);
  tp.train();
  Layout one{"validation_alone"};
  one.sequence_parallel = false;
  train::Trainer alone_trainer(with_validation(tiny_job(one), kGlobalBatch));
  alone_trainer.train();
  const train::ValidationResult a = alone_trainer.validate(), b = tp.validate();
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NEAR(b.loss, a.loss, 1e-5 * a.loss);
}

// One microbatch's forward and backward on the model alone (no trainer), tp = the world: the
// loss and every gradient equal one rank's in each mode of the layout, with a vocabulary
// (2050) and a hidden dim (150) that tp 4 splits unevenly; the counters show the
// collectives each mode makes.
struct Gradients {
  double loss = 0;
  std::vector<std::string> names;
  std::vector<Tensor> grads;  // whole
};

config::JobConfig gradient_job(bool tied = false) {
  config::JobConfig c;
  c.model.flavor = "tiny";
  c.model.enable_weight_tying = tied;
  c.model.vocab_size = 2050;
  c.model.ffn_dim = 150;
  c.training.seq_len = 32;
  return c;
}

constexpr int64_t kBatch = 2, kSeq = 32, kLayers = 8, kDim = 64;

void fill_batch(Tensor& tokens, Tensor& labels) {
  int32_t* t = tokens.mutable_data<int32_t>();
  int32_t* l = labels.mutable_data<int32_t>();
  for (int64_t i = 0; i < tokens.numel(); ++i) {
    t[i] = int32_t((i * 977 + 13) % 2050);
    l[i] = i % 11 == 5 ? int32_t(ops::kIgnoreIndex) : int32_t((i * 389 + 7) % 2050);
  }
}

// forward_stats, step_stats: the tp group's counters after the forward, and after the
// backward and the partial gradients' reduction.
Gradients one_microbatch(const config::JobConfig& config, TensorParallelGroup* tp,
                         CommStats* forward_stats = nullptr, CommStats* step_stats = nullptr) {
  nn::ParameterLayout layout;
  if (tp) {
    layout.tp = {tp->size(), tp->rank()};
    layout.tensor_parallel = tp;
  }
  std::unique_ptr<models::Model> model = models::model_family("llama3").build(config, layout);
  model->initialize(config.debug.effective_seed());
  Tensor tokens = Tensor::empty({kBatch, kSeq}, DType::I32);
  Tensor labels = Tensor::empty({kBatch, kSeq}, DType::I32);
  fill_batch(tokens, labels);
  std::unique_ptr<models::ActivationRecord> record = model->new_record();
  if (tp) tp->group().reset_stats();
  Gradients g;
  g.loss = model->forward(tokens, labels, *record);
  if (forward_stats) *forward_stats = tp->group().stats();
  model->backward(*record, float(1.0 / ops::cross_entropy_valid_tokens(labels)));
  if (tp) tp->reduce_partial_gradients(model->parameters());
  if (step_stats) *step_stats = tp->group().stats();
  for (nn::Parameter* p : model->parameters()) {
    g.names.push_back(p->name());
    g.grads.push_back(tp ? gather_whole(*p, p->grad(), &tp->group()) : p->grad());
  }
  return g;
}

const Gradients& one_rank_gradients(bool tied) {
  static const Gradients untied = one_microbatch(gradient_job(false), nullptr);
  static const Gradients with_tying = one_microbatch(gradient_job(true), nullptr);
  return tied ? with_tying : untied;
}

void expect_same_gradients(const Gradients& g, bool tied = false) {
  const Gradients& want = one_rank_gradients(tied);
  EXPECT_NEAR(g.loss, want.loss, 1e-6 * want.loss);
  ASSERT_EQ(g.names, want.names);
  for (size_t i = 0; i < want.grads.size(); ++i) {
    testing::expect_close(testing::to_values(g.grads[i]), testing::to_values(want.grads[i]),
                          1e-5, want.names[i]);
  }
}

bool world_splits_tiny_heads() { return test_world().size() == 2 || test_world().size() == 4; }

// The modules alone, tp = the world with sequence parallelism: attention (tiny's 4 heads
// and 2 kv heads: split at tp 2, each kv head shared by two ranks at tp 4) and the
// feed-forward give the unsharded module's output rows, input gradient rows and, once the
// partial gradients are summed, its weight gradients.
template <class Module, class Record>
void expect_module_matches_unsharded(const std::function<Module(const nn::Placer&)>& make,
                                     const std::function<void(const Module&, const Tensor&,
                                                              Tensor&, Record&)>& forward,
                                     const std::function<void(Module&, Record&)>& backward_weight,
                                     const std::function<std::vector<nn::Parameter*>(Module&)>&
                                         parameters,
                                     const std::function<void(const Module&, const Tensor&,
                                                              Record&, Tensor&)>& backward_input) {
  const int64_t p = test_world().size(), r = test_world().rank(), N = kBatch * kSeq, n = N / p;
  TensorParallelGroup tp(test_world(), {true, true, false});
  nn::ParameterLayout layout;
  layout.tp = {p, r};
  layout.tensor_parallel = &tp;
  models::llama3::ModelArgs args;
  for (const models::llama3::Flavor& f : models::llama3::llama3_flavors()) {
    if (f.name == "tiny") args = f.args;
  }
  Module whole = make(nn::Placer{});
  Module piece = make(nn::Placer(layout, models::llama3::parallel_plan(args, p)));
  for (auto* module : {&whole, &piece}) {
    for (nn::Parameter* param : parameters(*module)) param->initialize(7);
  }
  const Tensor x = testing::random_tensor({N, kDim}, 11);
  const Tensor dy = testing::random_tensor({N, kDim}, 12);
  Tensor y = Tensor::empty({N, kDim}, DType::F32), dx = Tensor::empty({N, kDim}, DType::F32);
  Record whole_record, piece_record;
  forward(whole, x, y, whole_record);
  backward_input(whole, dy, whole_record, dx);
  backward_weight(whole, whole_record);
  Tensor y_rows = Tensor::empty({n, kDim}, DType::F32);
  Tensor dx_rows = Tensor::empty({n, kDim}, DType::F32);
  forward(piece, x.narrow(r * n, n), y_rows, piece_record);
  backward_input(piece, dy.narrow(r * n, n), piece_record, dx_rows);
  backward_weight(piece, piece_record);
  tp.reduce_partial_gradients(parameters(piece));
  testing::expect_close(testing::to_values(y_rows), testing::to_values(y.narrow(r * n, n)), 1e-5,
                        "output rows");
  testing::expect_close(testing::to_values(dx_rows), testing::to_values(dx.narrow(r * n, n)), 1e-5,
                        "input gradient rows");
  const std::vector<nn::Parameter*> want = parameters(whole), got = parameters(piece);
  for (size_t i = 0; i < want.size(); ++i) {
    testing::expect_close(testing::to_values(gather_whole(*got[i], got[i]->grad(), &test_world())),
                          testing::to_values(want[i]->grad()), 1e-5, want[i]->name());
  }
}

TEST(TensorParallel, AttentionWithSplitOrSharedKvHeadsEqualsTheUnshardedModule) {
  if (!world_splits_tiny_heads()) GTEST_SKIP() << "tp 2 or 4";
  const nn::InitRule init{nn::InitKind::TruncatedNormal, 0.02, 2.0};
  nn::SequenceLayout seq;
  seq.batch = kBatch;
  seq.freqs = Tensor::empty({kSeq, kDim / 4 / 2, 2}, DType::F32);
  ops::rope_table(kDim / 4, 500000.0, ops::RopeScaling{}, 0, seq.freqs);
  expect_module_matches_unsharded<nn::Attention, nn::AttentionRecord>(
      [&](const nn::Placer& placer) {
        return nn::Attention("layers.0.attention", kDim, 4, 2, init, init, placer);
      },
      [&](const nn::Attention& a, const Tensor& x, Tensor& y, nn::AttentionRecord& record) {
        a.forward(x, seq, y, record);
      },
      [](nn::Attention& a, nn::AttentionRecord& record) { a.backward_weight(record); },
      [](nn::Attention& a) { return a.parameters(); },
      [&](const nn::Attention& a, const Tensor& dy, nn::AttentionRecord& record, Tensor& dx) {
        a.backward_input(dy, seq, record, dx, ops::Accumulate::No);
      });
}

TEST(TensorParallel, FeedForwardEqualsTheUnshardedModule) {
  if (!world_splits_tiny_heads()) GTEST_SKIP() << "tp 2 or 4";
  const nn::InitRule init{nn::InitKind::TruncatedNormal, 0.02, 2.0};
  expect_module_matches_unsharded<nn::FeedForward, nn::FeedForwardRecord>(
      [&](const nn::Placer& placer) {
        return nn::FeedForward("layers.0.feed_forward", kDim, 150, init, init, placer);
      },
      [](const nn::FeedForward& f, const Tensor& x, Tensor& y, nn::FeedForwardRecord& record) {
        f.forward(x, y, record);
      },
      [](nn::FeedForward& f, nn::FeedForwardRecord& record) { f.backward_weight(record); },
      [](nn::FeedForward& f) { return f.parameters(); },
      [](const nn::FeedForward& f, const Tensor& dy, nn::FeedForwardRecord& record, Tensor& dx) {
        f.backward_input(dy, record, dx, ops::Accumulate::No);
      });
}


TEST(TensorParallel, ModulesGiveOneRanksGradients) {
  if (!world_splits_tiny_heads()) GTEST_SKIP() << "tp 2 or 4";
  for (bool sequence_parallel : {true, false}) {
    for (bool loss_parallel : {true, false}) {
      SCOPED_TRACE(std::string("sequence parallel ") + (sequence_parallel ? "on" : "off") +
                   ", loss parallel " + (loss_parallel ? "on" : "off"));
      TensorParallelGroup tp(test_world(), {sequence_parallel, loss_parallel, false});
      expect_same_gradients(one_microbatch(gradient_job(), &tp));
    }
  }
  // The embedding as the output too: one vocab-parallel weight, both gradients in it.
  TensorParallelGroup tp(test_world(), {true, true, false});
  expect_same_gradients(one_microbatch(gradient_job(true), &tp), true);
}

// With sequence parallelism a block's forward makes 2 all-gathers and 2 reduce-scatters
// over tp; the embedding adds a reduce-scatter, the loss an all-gather of the final norm's
// rows and two all-reduces of per-token statistics. Every all-gather moves [N, D]
// activations and the all-reduces 3 N floats: the N x V logits never move.
TEST(TensorParallel, CollectivesFollowTheLayout) {
  if (!world_splits_tiny_heads()) GTEST_SKIP() << "tp 2 or 4";
  TensorParallelGroup tp(test_world(), {true, true, false});
  CommStats forward, step;
  one_microbatch(gradient_job(), &tp, &forward, &step);
  const int64_t N = kBatch * kSeq;
  EXPECT_EQ(forward[Collective::AllGather].calls, 2 * kLayers + 1);
  EXPECT_EQ(forward[Collective::ReduceScatter].calls, 2 * kLayers + 1);
  EXPECT_EQ(forward[Collective::AllReduce].calls, 2);
  EXPECT_EQ(forward[Collective::AllGather].bytes, (2 * kLayers + 1) * N * kDim * 4);
  EXPECT_EQ(forward[Collective::AllReduce].bytes, 3 * N * 4);
  EXPECT_EQ(step[Collective::AllReduce].bytes - forward[Collective::AllReduce].bytes,
            (2 * kLayers + 1) * kDim * 4)  // the norms' partial gradients, packed
      << "no all-reduce in backward but the partial gradients'";
}

// The loss's memory on each rank is a 1/tp slice of the logits: the peak it adds over what
// it is given is [N, V / tp] floats (its chunk of logits) and per-token vectors.
TEST(TensorParallel, LossParallelHoldsASliceOfTheLogits) {
  if (!world_splits_tiny_heads()) GTEST_SKIP() << "tp 2 or 4";
  const int64_t p = test_world().size(), N = kBatch * kSeq, V = 2048, D = kDim;
  TensorParallelGroup tp(test_world(), {true, true, false});
  const int64_t slice_rows = V / p;
  Tensor h = Tensor::empty({N / p, D}, DType::F32);
  Tensor weight = Tensor::empty({slice_rows, D}, DType::F32);
  for (int64_t i = 0; i < h.numel(); ++i) h.mutable_data<float>()[i] = float(i % 7) * 0.01f;
  for (int64_t i = 0; i < weight.numel(); ++i) {
    weight.mutable_data<float>()[i] = float(i % 5) * 0.01f;
  }
  Tensor labels = Tensor::empty({N}, DType::I32);
  for (int64_t i = 0; i < N; ++i) labels.mutable_data<int32_t>()[i] = int32_t(i * 31 % V);
  Allocator& allocator = allocator_for(Device::cpu());
  allocator.reset_peak();
  const int64_t before = allocator.stats().current_bytes;
  nn::VocabParallelLossRecord record;
  nn::vocab_parallel_loss_forward(tp, h, weight, {tp.rank() * slice_rows, V}, labels, record);
  const int64_t added = allocator.stats().peak_bytes - before;
  const int64_t slice_bytes = N * slice_rows * 4, small = N * D * 4 + 16 * N * 4 + 4096;
  EXPECT_LE(added, slice_bytes + small) << "a 1/" << p << " slice is " << slice_bytes;
  EXPECT_LT(added, N * V * 4 / p + small);
}

#if TITAN_HAVE_HDF5
// A checkpoint saved at step 5 on one layout resumes on another and the losses of steps
// 6..10 are the uninterrupted one-rank run's. The files hold whole tensors whatever the
// layout, so the Hugging Face export of the TP 2 x FSDP 2 checkpoint equals the one of a
// one-rank run's checkpoint at the same step, and one rank resumes from it.
config::JobConfig checkpointed(const Layout& layout, const fs::path& folder) {
  config::JobConfig c = tiny_job(layout);
  c.job.dump_folder = folder.string();
  c.checkpoint.enable = true;
  c.checkpoint.interval = 5;
  return c;
}

fs::path shared_folder(const std::string& name) {
  const fs::path folder = fs::temp_directory_path() / ("titan_tp_test_" + name);
  if (test_world().rank() == 0) fs::remove_all(folder);
  test_world().barrier().wait();
  return folder;
}

void train_steps(const config::JobConfig& config, int64_t steps) {
  Mesh mesh(mesh_shape_from_config(config.parallelism, test_world().size()), test_world());
  train::Trainer trainer(config, &mesh);
  for (int64_t s = 0; s < steps; ++s) trainer.train_step();
}

TEST(TensorParallel, CheckpointsResumeOnAnyLayout) {
  if (test_world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const Layout fsdp4{"ckpt_fsdp4", 1, 4, 1}, tp2_fsdp2{"ckpt_tp2_fsdp2", 1, 2, 2},
      tp4{"ckpt_tp4", 1, 1, 4};
  struct Case {
    Layout save, resume;
  };
  int index = 0;
  for (const Case& c : {Case{tp2_fsdp2, tp4}, Case{tp4, fsdp4}, Case{fsdp4, tp2_fsdp2}}) {
    SCOPED_TRACE(c.save.name + " -> " + c.resume.name);
    const fs::path folder = shared_folder("resume" + std::to_string(index++));
    train_steps(checkpointed(c.save, folder), 5);
    Mesh mesh(mesh_shape_from_config(tiny_job(c.resume).parallelism, 4), test_world());
    train::Trainer resumed(checkpointed(c.resume, folder), &mesh);
    const std::vector<train::StepResult> steps = resumed.train();
    ASSERT_EQ(steps.size(), 5u);
    for (size_t s = 0; s < steps.size(); ++s) {
      const train::StepResult& want = alone().steps[s + 5];
      EXPECT_EQ(steps[s].step, want.step);
      EXPECT_NEAR(steps[s].loss, want.loss, 1e-5 * want.loss) << "step " << want.step;
    }
  }
}

// Rank 0 alone: the HF export of the TP checkpoint in `folder` equals a one-rank run's, and
// one rank resumes from the TP checkpoint with the uninterrupted run's losses.
void export_and_resume_alone(const fs::path& folder) {
  config::JobConfig alone_config = checkpointed({"export_one"}, folder / "alone");
  alone_config.training.local_batch_size = kGlobalBatch;
  {
    train::Trainer trainer(alone_config);
    for (int s = 0; s < 5; ++s) trainer.train_step();
  }
  ckpt::HfExportOptions options;
  options.out_dir = (folder / "hf_tp").string();
  ckpt::export_hf_safetensors((folder / "checkpoint" / "step-5.h5").string(), options);
  options.out_dir = (folder / "hf_one").string();
  ckpt::export_hf_safetensors((folder / "alone" / "checkpoint" / "step-5.h5").string(), options);
  const ckpt::SafetensorsFile from_tp =
      ckpt::read_safetensors((folder / "hf_tp/model.safetensors").string());
  const ckpt::SafetensorsFile from_one =
      ckpt::read_safetensors((folder / "hf_one/model.safetensors").string());
  ASSERT_EQ(from_tp.names(), from_one.names());
  for (const std::string& name : from_one.names()) {
    testing::expect_close(testing::to_values(from_tp.tensor(name)),
                          testing::to_values(from_one.tensor(name)), 1e-5, name);
  }
  config::JobConfig resume = checkpointed({"resume_one"}, folder / "resume_alone");
  resume.training.local_batch_size = kGlobalBatch;
  resume.checkpoint.initial_load_path = (folder / "checkpoint" / "step-5.h5").string();
  resume.checkpoint.initial_load_model_only = false;
  train::Trainer resumed(resume);
  const std::vector<train::StepResult> steps = resumed.train();
  ASSERT_EQ(steps.size(), 5u);
  for (size_t s = 0; s < steps.size(); ++s) {
    EXPECT_NEAR(steps[s].loss, alone().steps[s + 5].loss, 1e-5 * alone().steps[s + 5].loss);
  }
}

// A model-only load of an HF folder: under TP 2 x FSDP 2 the parameters are one rank's.
config::JobConfig importing(const Layout& layout, const fs::path& folder, const fs::path& hf) {
  config::JobConfig c = checkpointed(layout, folder);
  c.checkpoint.initial_load_path = hf.string();
  c.checkpoint.initial_load_in_hf = true;
  return c;
}

TEST(TensorParallel, HfExportAndImportOfATpCheckpoint) {
  if (test_world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const fs::path folder = shared_folder("export");
  const Layout tp2_fsdp2{"export_tp", 1, 2, 2};
  train_steps(checkpointed(tp2_fsdp2, folder), 5);
  if (test_world().rank() == 0) export_and_resume_alone(folder);
  test_world().barrier().wait();

  const config::JobConfig tp_import = importing(tp2_fsdp2, folder / "import_tp", folder / "hf_tp");
  Mesh mesh(mesh_shape_from_config(tp_import.parallelism, 4), test_world());
  train::Trainer imported(tp_import, &mesh);
  std::vector<Tensor> whole;
  for (nn::Parameter* p : imported.model().parameters()) {
    whole.push_back(gather_whole(*p, p->shard(), &test_world()));
  }
  if (test_world().rank() != 0) return;
  Layout one{"import_one"};
  config::JobConfig one_import = importing(one, folder / "import_one", folder / "hf_tp");
  one_import.training.local_batch_size = kGlobalBatch;
  train::Trainer alone_import(one_import);
  const std::vector<nn::Parameter*> params = alone_import.model().parameters();
  ASSERT_EQ(params.size(), whole.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(testing::to_values(whole[i]), testing::to_values(params[i]->shard()))
        << params[i]->name();
  }
}
#endif

}  // namespace
}  // namespace titan::distributed

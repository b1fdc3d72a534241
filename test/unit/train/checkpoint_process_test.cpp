// Checkpoints through titan-train, as a user runs it (docs/checkpoints.md): exact resume on
// the same mesh, resume on other meshes, files that h5ls reads, keep_latest_k, and bad
// checkpoints as one line with exit 2 that leaves them untouched.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "support/train_process.h"
#include "titan/build_config.h"

namespace titan {
namespace {

#if TITAN_HAVE_MPI && TITAN_HAVE_HDF5
namespace fs = std::filesystem;
using testing::ProcessResult;

fs::path fresh(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("titan_ckpt_process_" + name);
  fs::remove_all(dir);
  return dir;
}

// The tiny model on SOTU with a global batch of 4 sequences; the LR is constant after
// warmup (decay_ratio 0), so a run of 10 steps is the first half of a run of 20.
std::vector<std::string> job(const fs::path& dump, int ranks, int steps,
                             std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--model.flavor", "tiny",
                                   "--training.dataset_path", testing::assets_path("data/sotu"),
                                   "--training.seq_len", "64",
                                   "--training.global_batch_size", "4",
                                   "--training.local_batch_size", std::to_string(4 / ranks),
                                   "--training.steps", std::to_string(steps),
                                   "--lr_scheduler.warmup_steps", "2",
                                   "--lr_scheduler.decay_ratio", "0",
                                   "--metrics.log_freq", "1",
                                   "--metrics.peak_tflops", "1",
                                   "--checkpoint.enable",
                                   "--checkpoint.interval", "10",
                                   "--checkpoint.no_last_save_model_only",
                                   "--job.dump_folder", dump.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

ProcessResult train(int ranks, const std::vector<std::string>& args) {
  return ranks == 1 ? testing::run_titan_train(args) : testing::run_titan_train_mpi(ranks, args);
}

std::string describe(const ProcessResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

std::map<int, std::string> losses(const fs::path& dump) {
  return testing::logged_losses(dump.string());
}

const std::map<int, std::string>& straight_run() {
  static const std::map<int, std::string> reference = [] {
    const fs::path dump = fresh("straight");
    const ProcessResult r = train(2, job(dump, 2, 20, {"--checkpoint.no_enable"}));
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    return losses(dump);
  }();
  return reference;
}

TEST(CheckpointProcess, ResumeOnTheSameMeshIsBitwiseIdentical) {
  const fs::path dump = fresh("resume");
  ProcessResult r = train(2, job(dump, 2, 10));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(fs::exists(dump / "checkpoint" / "step-10.h5"));
  r = train(2, job(dump, 2, 20));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE((r.out + r.err).find("loaded"), std::string::npos) << describe(r);
  const std::map<int, std::string> resumed = losses(dump), reference = straight_run();
  ASSERT_EQ(reference.size(), 20u);
  for (int step = 11; step <= 20; ++step) {
    ASSERT_TRUE(resumed.count(step)) << "step " << step;
    EXPECT_EQ(resumed.at(step), reference.at(step)) << "step " << step;
  }
}

// DeepSeek V3 with expert parallelism 2 (each rank saves its experts' box): the routing
// biases are model state (model/layers.<i>.moe.expert_bias), so a run resumed from a
// checkpoint routes as the uninterrupted one: on the same mesh bitwise (losses and each
// step's expert load imbalance, which the biases decide), and on one rank without expert
// parallelism within the one-rank tolerance. A resume that lost the biases routes from zero
// biases and its imbalances part at once.
TEST(CheckpointProcess, ADeepSeekV3RunResumesWithItsRoutingBiases) {
  auto run = [&](const fs::path& dump, int ranks, int steps, std::vector<std::string> extra) {
    std::vector<std::string> args =
        job(dump, ranks, steps,
            {"--model.name", "deepseek_v3", "--checkpoint.interval", "4",
             "--parallelism.expert_parallel_degree", std::to_string(ranks)});
    args.insert(args.end(), extra.begin(), extra.end());
    const ProcessResult r = train(ranks, args);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
  };
  const fs::path straight = fresh("deepseek_straight"), resumed = fresh("deepseek_resumed");
  run(straight, 2, 8, {"--checkpoint.no_enable"});
  run(resumed, 2, 4, {});
  const fs::path saved = fresh("deepseek_saved");
  fs::copy(resumed, saved, fs::copy_options::recursive);
  run(resumed, 2, 8, {});
  const auto want_loss = losses(straight);
  const auto want_load = testing::logged_metric(straight.string(), "moe_load_imbalance");
  ASSERT_EQ(want_load.size(), 8u);
  for (int step = 5; step <= 8; ++step) {
    EXPECT_EQ(losses(resumed).at(step), want_loss.at(step)) << "step " << step;
    EXPECT_EQ(testing::logged_metric(resumed.string(), "moe_load_imbalance").at(step),
              want_load.at(step)) << "step " << step;
  }
  run(saved, 1, 8, {});
  const auto one_rank = losses(saved);
  for (int step = 5; step <= 8; ++step) {
    EXPECT_NEAR(std::stod(one_rank.at(step)), std::stod(want_loss.at(step)), 1e-5)
        << "step " << step;
  }
}

// Preemption (train/preemption.h): SIGUSR1 reaching one rank alone (the test hook raises it
// on rank 1 at step 7) stops every rank after that step, with a checkpoint of it and exit 0;
// running the job again resumes there and gives the uninterrupted run's losses.
TEST(CheckpointProcess, ASignalOnOneRankStopsEveryRankAfterSavingAndTheJobResumesExactly) {
  const fs::path dump = fresh("preempted");
  ProcessResult r = testing::run_titan_train_mpi(2, job(dump, 2, 20),
                                                 {"TITAN_TEST_FAULT=signal:1:7"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE((r.out + r.err).find("stopped on SIGUSR1 at step 7 of 20: saved"), std::string::npos)
      << describe(r);
  EXPECT_TRUE(fs::exists(dump / "checkpoint" / "step-7.h5"));
  EXPECT_FALSE(fs::exists(dump / "checkpoint" / "step-10.h5"));
  EXPECT_EQ(losses(dump).rbegin()->first, 7);
  r = train(2, job(dump, 2, 20));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::map<int, std::string> resumed = losses(dump), reference = straight_run();
  for (int step = 8; step <= 20; ++step) {
    ASSERT_TRUE(resumed.count(step)) << "step " << step;
    EXPECT_EQ(resumed.at(step), reference.at(step)) << "step " << step;
  }
}

// A disk too full for the next save (TITAN_TEST_FREE_BYTES stands in for the free space):
// one line names the folder, the bytes needed and free and the last complete checkpoint,
// which stays; nothing partial is left; exit 1 (an I/O failure).
TEST(CheckpointProcess, ADiskTooFullForTheSaveIsOneLineAndLeavesTheLastCheckpoint) {
  const fs::path dump = fresh("full_disk");
  ProcessResult r = train(2, job(dump, 2, 10));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const fs::path last = dump / "checkpoint" / "step-10.h5";
  const auto size = fs::file_size(last);
  r = testing::run_titan_train_mpi(2, job(dump, 2, 20), {"TITAN_TEST_FREE_BYTES=4096"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  for (const std::string& part : std::vector<std::string>{
           (dump / "checkpoint").string() + " has 4096 bytes free", "step 20 needs about",
           "last complete checkpoint, " + last.string() + ", is untouched"}) {
    EXPECT_NE(r.err.find(part), std::string::npos) << part << "\n" << describe(r);
  }
  EXPECT_EQ(fs::file_size(last), size);
  EXPECT_FALSE(fs::exists(dump / "checkpoint" / "step-20.h5"));
  EXPECT_FALSE(fs::exists(dump / "checkpoint" / "step-20.h5.tmp"));
}

// A write that fails once its file exists (TITAN_TEST_CHECKPOINT_WRITE_FAILS stands in for
// an I/O error): the job ends with exit 1 and the error, and no partial file is left, from
// a synchronous save and from an asynchronous one (whose error arrives at the next wait).
TEST(CheckpointProcess, AFailedWriteLeavesNoPartialFileSyncOrAsync) {
  for (const char* mode : {"disabled", "async"}) {
    SCOPED_TRACE(mode);
    const fs::path dump = fresh(std::string("failed_write_") + mode);
    const ProcessResult r = testing::run_titan_train_mpi(
        2, job(dump, 2, 10, {"--checkpoint.interval", "5", "--checkpoint.async_mode", mode}),
        {"TITAN_TEST_CHECKPOINT_WRITE_FAILS=1"});
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.err.find("step-5.h5.tmp: write failed"), std::string::npos) << describe(r);
    for (const auto& entry : fs::directory_iterator(dump / "checkpoint")) {
      ADD_FAILURE() << "left behind: " << entry.path();
    }
  }
}

// The real path: SIGUSR1 sent to mpirun (as a user or a batch script's trap does) reaches
// the ranks, which stop after a step with a checkpoint and exit 0.
TEST(CheckpointProcess, MpirunForwardsSigusr1AndTheJobStopsAfterSaving) {
  const fs::path dump = fresh("sigusr1");
  std::string command = std::string(TITAN_MPIEXEC) +
                        " --oversubscribe --allow-run-as-root -np 2 -x OMP_NUM_THREADS=1 " +
                        TITAN_TRAIN_EXE;
  for (const std::string& arg : job(dump, 2, 2000)) command += " '" + arg + "'";
  // Start the job, send SIGUSR1 once step 3 is logged, and wait for it.
  const std::string log = (fs::temp_directory_path() / "titan_sigusr1.log").string();
  const std::string script = command + " > " + log + " 2>&1 &\n"
      "pid=$!\n"
      "for i in $(seq 600); do grep -q 'step: 3 ' " + log + " && break; sleep 0.1; done\n"
      "kill -USR1 $pid\n"
      "wait $pid; code=$?\n"
      "cat " + log + "\n"
      "exit $code\n";
  const ProcessResult r = testing::run_process("/bin/sh", {"-c", script});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  static const std::regex stopped(R"(stopped on SIGUSR1 at step (\d+) of 2000: saved)");
  std::smatch m;
  const std::string text = r.out + r.err;
  ASSERT_TRUE(std::regex_search(text, m, stopped)) << describe(r);
  const int step = std::stoi(m[1]);
  EXPECT_GE(step, 3);
  EXPECT_LT(step, 2000);
  EXPECT_TRUE(fs::exists(dump / "checkpoint" / ("step-" + std::to_string(step) + ".h5")));
}

// Stop signals arriving by the hundred while oneDNN's GEMMs run: oneDNN 2.6's f32 GEMM
// kernels point rsp into a heap buffer, so a signal handled on a thread inside one wrote its
// frame onto the heap (glibc aborted, or the process crashed, in 3 of 3 runs of this test
// before titan-train held the signals; train/preemption.h). Held, they wait for the step's
// end: the job stops after step 1 with a checkpoint and exit 0. A step of 8 x 256 tokens
// gives the storm time.
TEST(CheckpointProcess, AStormOfStopSignalsDuringOneDnnGemmsStopsCleanlyAfterTheStep) {
  if (!TITAN_HAVE_DNNL) GTEST_SKIP() << "this build has no oneDNN (libdnnl-dev)";
  const fs::path dump = fresh("signal_storm");
  std::string command = std::string("TITAN_CPU_GEMM=onednn OMP_NUM_THREADS=1 ") +
                        TITAN_TRAIN_EXE;
  for (const std::string& arg :
       job(dump, 1, 100, {"--training.seq_len", "256", "--training.global_batch_size", "8",
                          "--training.local_batch_size", "8"})) {
    command += " '" + arg + "'";
  }
  // Signal every half millisecond from the trainer's first log line (the signals are held
  // from main's first line) until the process is gone.
  const std::string log = (fs::temp_directory_path() / "titan_signal_storm.log").string();
  const std::string script = command + " > " + log + " 2>&1 &\n"
      "pid=$!\n"
      "for i in $(seq 1000); do grep -q 'device: ' " + log + " && break; sleep 0.01; done\n"
      "sent=0\n"
      "while kill -USR1 $pid 2>/dev/null; do sent=$((sent + 1)); sleep 0.0005; done\n"
      "wait $pid; code=$?\n"
      "cat " + log + "\n"
      "echo \"signals sent: $sent\"\n"
      "exit $code\n";
  const ProcessResult r = testing::run_process("/bin/sh", {"-c", script});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("stopped on SIGUSR1 at step 1 of 100: saved"), std::string::npos)
      << describe(r);
  EXPECT_TRUE(fs::exists(dump / "checkpoint" / "step-1.h5"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(signals sent: (\d+))"))) << describe(r);
  EXPECT_GE(std::stoi(m[1]), 5) << "the storm was too short to test anything";
}

// 4D on one machine: 16 ranks as pp 2 x dp_shard 2 x cp 2 x tp 2 train the tiny model and
// checkpoint at step 5; 8 ranks as pp 2 x dp_shard 2 x tp 2 (sequence parallel off) resume
// it. Every step's loss equals one rank's within 1e-5 relative.
TEST(CheckpointProcess, FourDimensionsOnSixteenRanksResumeOnEightInAnotherLayout) {
  auto four_d = [](const fs::path& dump, int ranks, std::vector<std::string> layout) {
    std::vector<std::string> args = job(dump, 1, 10, {"--checkpoint.interval", "5"});
    args.insert(args.end(), {"--training.local_batch_size", "2"});
    args.insert(args.end(), layout.begin(), layout.end());
    return train(ranks, args);
  };
  const fs::path dump = fresh("four_d");
  ProcessResult r = four_d(dump, 16,
                           {"--parallelism.pipeline_parallel_degree", "2",
                            "--parallelism.data_parallel_shard_degree", "2",
                            "--parallelism.context_parallel_degree", "2",
                            "--parallelism.tensor_parallel_degree", "2", "--training.steps", "5"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE((r.out + r.err).find("pp 2 x dp_replicate 1 x dp_shard 2 x cp 2 x tp 2"),
            std::string::npos)
      << describe(r);
  ASSERT_TRUE(fs::exists(dump / "checkpoint" / "step-5.h5"));
  r = four_d(dump, 8,
             {"--parallelism.pipeline_parallel_degree", "2",
              "--parallelism.data_parallel_shard_degree", "2",
              "--parallelism.tensor_parallel_degree", "2",
              "--parallelism.no_enable_sequence_parallel"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const fs::path alone = fresh("four_d_alone");
  r = train(1, job(alone, 1, 10, {"--checkpoint.no_enable"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const std::map<int, std::string> got = losses(dump), want = losses(alone);
  ASSERT_EQ(want.size(), 10u);
  for (int step = 1; step <= 10; ++step) {
    ASSERT_TRUE(got.count(step)) << "step " << step;
    const double a = std::stod(got.at(step)), b = std::stod(want.at(step));
    EXPECT_NEAR(a, b, 1e-5 * b) << "step " << step;
  }
}

// Saved by 4 FSDP ranks; resumed by 2 FSDP ranks, 1 rank and 2x2 HSDP: each rank reads its
// own box of every tensor.
TEST(CheckpointProcess, ACheckpointOfOneMeshResumesOnOthers) {
  const fs::path saved = fresh("reshard_saved");
  ProcessResult r = train(4, job(saved, 4, 10));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  struct Target {
    std::string name;
    int ranks;
    std::vector<std::string> extra;
  };
  for (const Target& t : {Target{"fsdp2", 2, {}}, Target{"alone", 1, {}},
                          Target{"hsdp", 4, {"--parallelism.data_parallel_replicate_degree", "2"}}}) {
    const fs::path dump = fresh("reshard_" + t.name);
    fs::create_directories(dump / "checkpoint");
    fs::copy_file(saved / "checkpoint" / "step-10.h5", dump / "checkpoint" / "step-10.h5");
    r = train(t.ranks, job(dump, t.ranks, 20, t.extra));
    ASSERT_EQ(r.exit_code, 0) << t.name << "\n" << describe(r);
    const std::map<int, std::string> resumed = losses(dump), reference = straight_run();
    for (int step = 11; step <= 20; ++step) {
      ASSERT_TRUE(resumed.count(step)) << t.name << " step " << step;
      const double a = std::stod(resumed.at(step)), b = std::stod(reference.at(step));
      EXPECT_NEAR(a, b, 1e-5 * b) << t.name << " step " << step;
    }
  }
}

// HSDP writes each shard once (the first replica); one rank reads the whole back. A run
// whose own folder is empty starts from checkpoint.initial_load_path (a folder: its newest).
TEST(CheckpointProcess, HsdpSavesLoadAloneThroughInitialLoadPath) {
  const fs::path saved = fresh("hsdp_saved");
  ProcessResult r = train(4, job(saved, 4, 10, {"--parallelism.data_parallel_replicate_degree", "2"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const fs::path dump = fresh("hsdp_alone");
  r = train(1, job(dump, 1, 20, {"--checkpoint.initial_load_path", (saved / "checkpoint").string(),
                                 "--checkpoint.no_initial_load_model_only"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE((r.out + r.err).find("step-10.h5 (step 10"), std::string::npos) << describe(r);
  const std::map<int, std::string> resumed = losses(dump), reference = straight_run();
  for (int step = 11; step <= 20; ++step) {
    ASSERT_TRUE(resumed.count(step)) << "step " << step;
    EXPECT_NEAR(std::stod(resumed.at(step)), std::stod(reference.at(step)),
                1e-5 * std::stod(reference.at(step))) << "step " << step;
  }
}

TEST(CheckpointProcess, H5lsListsEveryTensorAndBf16ExportsPrintAsFloats) {
  const fs::path dump = fresh("h5ls");
  const ProcessResult r = train(2, job(dump, 2, 10, {"--checkpoint.interval", "5",
                                                    "--checkpoint.last_save_model_only",
                                                    "--checkpoint.export_dtype", "bfloat16"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const ProcessResult full = testing::run_process("/usr/bin/h5ls", {"-r", (dump / "checkpoint" / "step-5.h5").string()});
  ASSERT_EQ(full.exit_code, 0) << describe(full);
  for (const char* name : {"/model/tok_embeddings.weight", "/model/layers.7.feed_forward.w2.weight",
                           "/optimizer/exp_avg/output.weight", "/optimizer/exp_avg_sq/norm.weight"}) {
    EXPECT_NE(full.out.find(name), std::string::npos) << name << "\n" << full.out;
  }
  EXPECT_NE(full.out.find("Dataset {2048, 64}"), std::string::npos) << full.out;
  const fs::path last = dump / "checkpoint" / "step-10.h5";
  const ProcessResult exported = testing::run_process("/usr/bin/h5ls", {"-v", (last / "model" / "norm.weight").string()});
  EXPECT_NE(exported.out.find("16-bit little-endian floating-point"), std::string::npos) << exported.out;
  const ProcessResult only_model = testing::run_process("/usr/bin/h5ls", {"-r", last.string()});
  EXPECT_EQ(only_model.out.find("/optimizer"), std::string::npos) << only_model.out;
  // h5dump prints the norm weights (ones, then trained) as numbers near 1.
  const ProcessResult dumped = testing::run_process(
      "/usr/bin/h5dump", {"-d", "/model/norm.weight", "-s", "0", "-c", "2", last.string()});
  EXPECT_TRUE(std::regex_search(dumped.out, std::regex(R"(\(0\): (0\.9|1)[0-9.]*, (0\.9|1))")))
      << dumped.out;
}

// async_mode: async writes on an I/O thread while training goes on. A test-only delay in
// the writer holds each save back 3 s, so steps 3 and 4 finish while step 2's is written
// whatever the machine's speed; the files equal those of synchronous saves (h5diff).
TEST(CheckpointProcess, AsyncSavesOverlapTrainingAndEqualSynchronousOnes) {
  const fs::path async_dump = fresh("async"), sync_dump = fresh("sync");
  const std::vector<std::string> every_two = {"--checkpoint.interval", "2",
                                              "--checkpoint.keep_latest_k", "0"};
  std::vector<std::string> async_args = job(async_dump, 2, 6, every_two);
  async_args.insert(async_args.end(), {"--checkpoint.async_mode", "async"});
  const ProcessResult a = testing::run_titan_train_mpi(2, async_args,
                                                       {"TITAN_TEST_CHECKPOINT_WRITE_DELAY_S=3"});
  ASSERT_EQ(a.exit_code, 0) << describe(a);
  const std::string log = a.out + a.err;
  const size_t saved_2 = log.find("saved " + (async_dump / "checkpoint" / "step-2.h5").string());
  const size_t step_4 = log.find("step: 4 ");
  ASSERT_NE(saved_2, std::string::npos) << log;
  ASSERT_NE(step_4, std::string::npos) << log;
  EXPECT_LT(step_4, saved_2) << "step 4 should finish while step 2's checkpoint is written\n" << log;
  const ProcessResult s = train(2, job(sync_dump, 2, 6, every_two));
  ASSERT_EQ(s.exit_code, 0) << describe(s);
  for (int step : {2, 4, 6}) {
    const std::string name = "step-" + std::to_string(step) + ".h5";
    for (const char* group : {"/model", "/optimizer"}) {
      const ProcessResult d = testing::run_process(
          "/usr/bin/h5diff", {(async_dump / "checkpoint" / name).string(),
                              (sync_dump / "checkpoint" / name).string(), group, group});
      EXPECT_EQ(d.exit_code, 0) << name << " " << group << "\n" << describe(d);
    }
    const ProcessResult diff = testing::run_titan_ckpt(
        {"diff", (async_dump / "checkpoint" / name).string(), (sync_dump / "checkpoint" / name).string()});
    EXPECT_EQ(diff.exit_code, 0) << describe(diff);
    EXPECT_NE(diff.out.find("max abs diff: 0\n"), std::string::npos) << describe(diff);
  }
}

// last_save_in_hf writes step-<N>-hf/ beside the last checkpoint; initial_load_in_hf starts
// a new job from such a folder, with the same first loss as from the checkpoint itself.
TEST(CheckpointProcess, LastSaveInHfAndInitialLoadInHf) {
  const fs::path dump = fresh("hf_source");
  ProcessResult r = train(2, job(dump, 2, 10, {"--checkpoint.last_save_model_only",
                                               "--checkpoint.last_save_in_hf"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const fs::path hf = dump / "checkpoint" / "step-10-hf";
  EXPECT_TRUE(fs::exists(hf / "config.json")) << describe(r);
  EXPECT_TRUE(fs::exists(hf / "model.safetensors")) << describe(r);
  std::map<int, std::string> first_loss;
  for (const bool from_hf : {false, true}) {
    const fs::path started = fresh(from_hf ? "hf_start" : "h5_start");
    std::vector<std::string> extra = {"--checkpoint.initial_load_path",
                                      from_hf ? hf.string() : (dump / "checkpoint" / "step-10.h5").string()};
    if (from_hf) extra.push_back("--checkpoint.initial_load_in_hf");
    r = train(2, job(started, 2, 1, extra));
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    first_loss[from_hf] = losses(started).at(1);
    EXPECT_FALSE(fs::exists(started / "checkpoint" / "initial-load-from-hf.h5"));
  }
  EXPECT_EQ(first_loss[true], first_loss[false]);
  EXPECT_NE(first_loss[true], straight_run().at(1)) << "the loaded weights are not the initial ones";
}

TEST(CheckpointProcess, KeepLatestKDeletesOnlyOlderCompleteCheckpoints) {
  const fs::path dump = fresh("keep");
  const ProcessResult r = train(2, job(dump, 2, 10, {"--checkpoint.interval", "2",
                                                    "--checkpoint.keep_latest_k", "2"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dump / "checkpoint")) {
    files.push_back(entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"step-10.h5", "step-8.h5"}));
}

TEST(CheckpointProcess, BadCheckpointsAreExitTwoAndLeftUntouched) {
  const fs::path dump = fresh("bad");
  ASSERT_EQ(train(2, job(dump, 2, 10)).exit_code, 0);
  const fs::path folder = dump / "checkpoint";
  // An interrupted save (.tmp) is passed over: the run resumes from step 10.
  std::ofstream(folder / "step-15.h5.tmp") << "half a checkpoint";
  ProcessResult r = train(2, job(dump, 2, 12));
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE((r.out + r.err).find("step-10.h5 (step 10"), std::string::npos) << describe(r);
  // A step file that is not HDF5 is exit 2 naming it, never skipped, and stays as it was.
  std::ofstream(folder / "step-30.h5") << "not a checkpoint";
  r = train(2, job(dump, 2, 40));
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("step-30.h5"), std::string::npos) << describe(r);
  // ... and names the fixes: move it away, or load the checkpoint before it.
  for (const std::string& part : std::vector<std::string>{
           "move it away", "the checkpoint before it is " + (folder / "step-12.h5").string(),
           "(checkpoint.load_step 12)"}) {
    EXPECT_NE(r.err.find(part), std::string::npos) << part << "\n" << describe(r);
  }
  std::ifstream kept(folder / "step-30.h5");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(kept), {}), "not a checkpoint");
  fs::remove(folder / "step-30.h5");
  // load_step that is not there.
  r = train(2, job(dump, 2, 40, {"--checkpoint.load_step", "7"}));
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("checkpoint.load_step 7"), std::string::npos) << describe(r);
  // Another model: the first mismatched tensor is named.
  r = train(2, job(dump, 2, 40, {"--model.dim", "128"}));
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("tok_embeddings.weight is [2048, 64]"), std::string::npos) << describe(r);
}
#endif

}  // namespace
}  // namespace titan

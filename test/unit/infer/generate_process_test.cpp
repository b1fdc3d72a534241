// titan-generate from a checkpoint titan-train wrote: exactly N new ids, the same on one
// rank and sharded over 2 or 3, a seed fixing the draw, BOS before the prompt, and bad
// input as exit 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "support/train_process.h"
#include "titan/build_config.h"
#include "titan/data/tokenizer.h"
#include "titan/infer/generate.h"

namespace titan {
namespace {

#if TITAN_HAVE_MPI && TITAN_HAVE_HDF5
namespace fs = std::filesystem;
using testing::ProcessResult;

const std::string& trained_checkpoint() {
  static const std::string path = [] {
    const fs::path dump = fs::temp_directory_path() / "titan_generate_test";
    fs::remove_all(dump);
    const ProcessResult r = testing::run_titan_train(
        {"--model.flavor", "tiny", "--training.dataset_path", testing::assets_path("data/sotu"),
         "--model.hf_assets_path", testing::assets_path("tokenizer/sotu-2k"),
         "--training.seq_len", "64", "--training.local_batch_size", "4", "--training.steps", "30",
         "--metrics.peak_tflops", "1", "--checkpoint.enable", "--checkpoint.interval", "30",
         "--job.dump_folder", dump.string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return (dump / "checkpoint" / "step-30.h5").string();
  }();
  return path;
}

std::string generate_exe() { return (fs::path(TITAN_TRAIN_EXE).parent_path() / "titan-generate").string(); }

ProcessResult generate(int ranks, std::vector<std::string> extra) {
  std::vector<std::string> args = {"--checkpoint", trained_checkpoint(), "--prompt",
                                   "My fellow citizens", "--max-new-tokens", "16", "--ids"};
  args.insert(args.end(), extra.begin(), extra.end());
  if (ranks == 1) return testing::run_process(generate_exe(), args);
  std::vector<std::string> mpirun = {"--oversubscribe", "--allow-run-as-root", "-np",
                                     std::to_string(ranks), "-x", "OMP_NUM_THREADS=1",
                                     generate_exe()};
  mpirun.insert(mpirun.end(), args.begin(), args.end());
  return testing::run_process(TITAN_MPIEXEC, mpirun);
}

std::vector<int64_t> ids_of(const ProcessResult& r) {
  std::vector<int64_t> ids;
  std::istringstream in(r.out);
  for (int64_t id; in >> id;) ids.push_back(id);
  return ids;
}

TEST(GenerateProcess, ExactlyNIdsTheSameOnOneRankShardedAndTensorParallel) {
  for (const std::vector<std::string>& sampling :
       {std::vector<std::string>{"--temperature", "0"},
        std::vector<std::string>{"--temperature", "0.8", "--top-k", "50", "--seed", "5"}}) {
    const ProcessResult alone = generate(1, sampling);
    ASSERT_EQ(alone.exit_code, 0) << alone.err;
    const std::vector<int64_t> ids = ids_of(alone);
    EXPECT_EQ(ids.size(), 16u) << alone.out;
    // FSDP over 2 and 3 ranks, TP 2, and FSDP 2 x TP 2.
    for (const auto& [ranks, tp] : {std::pair{2, 1}, std::pair{3, 1}, std::pair{2, 2},
                                    std::pair{4, 2}}) {
      std::vector<std::string> args = sampling;
      args.insert(args.end(), {"--tp", std::to_string(tp)});
      const ProcessResult sharded = generate(ranks, args);
      ASSERT_EQ(sharded.exit_code, 0) << sharded.err;
      EXPECT_EQ(ids_of(sharded), ids) << ranks << " ranks, tp " << tp << ", " << sampling[1];
    }
  }
  const ProcessResult other_seed = generate(1, {"--temperature", "0.8", "--top-k", "50", "--seed", "6"});
  const ProcessResult seed_5 = generate(1, {"--temperature", "0.8", "--top-k", "50", "--seed", "5"});
  EXPECT_NE(ids_of(other_seed), ids_of(seed_5));
}

// The text form prints the decoded ids.
TEST(GenerateProcess, TextIsTheDecodedIds) {
  const ProcessResult ids = generate(1, {"--temperature", "0"});
  std::vector<std::string> text_args = {"--checkpoint", trained_checkpoint(), "--prompt",
                                        "My fellow citizens", "--max-new-tokens", "16",
                                        "--temperature", "0"};
  const ProcessResult text = testing::run_process(generate_exe(), text_args);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  const data::Tokenizer tokenizer = data::Tokenizer::load(testing::assets_path("tokenizer/sotu-2k"));
  const std::vector<int64_t> wide = ids_of(ids);
  const std::vector<int32_t> narrow(wide.begin(), wide.end());
  EXPECT_EQ(text.out, tokenizer.decode(narrow) + "\n");
}

// The prompt is framed as torchtitan's generation script frames it: BOS, then the text.
TEST(GenerateProcess, PromptsStartWithBos) {
  distributed::SelfCommunicator world("world");
  const infer::GenerationModel model = infer::load_generation_model(
      trained_checkpoint(), world, testing::assets_path("tokenizer/sotu-2k"));
  const std::vector<int64_t> ids = model.encode_prompt("My fellow citizens");
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids.front(), model.tokenizer->bos_id());
  EXPECT_EQ(model.step, 30);
}

TEST(GenerateProcess, BadInputIsExitTwo) {
  ProcessResult r = testing::run_process(generate_exe(), {"--checkpoint", "/nonexistent/step-1.h5",
                                                          "--prompt", "x"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/step-1.h5"), std::string::npos) << r.err;
  r = testing::run_process(generate_exe(), {"--prompt", "x"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = generate(1, {"--max-new-tokens", "1000"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("sequence length"), std::string::npos) << r.err;
}
#endif

}  // namespace
}  // namespace titan

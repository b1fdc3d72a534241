// The checkpoint folder's rules (ckpt/checkpoint_folder.h): which files count as checkpoints,
// pruning to keep_latest_k, and publishing a file written under a temporary name.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "titan/ckpt/checkpoint_folder.h"
#include "titan/core/error.h"

namespace titan::ckpt {
namespace {

namespace fs = std::filesystem;

fs::path fresh(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("titan_checkpoint_folder_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void touch(const fs::path& file, const std::string& text = "x") { std::ofstream(file) << text; }

TEST(CheckpointFolder, CountsWholeStepFilesOnlyAndPrunesTheOldest) {
  const fs::path dir = fresh("steps");
  for (const char* name :
       {"step-10.h5", "step-2.h5", "step-30.h5", "step-40.h5.tmp", "notes.txt"}) {
    touch(dir / name);
  }
  EXPECT_EQ(checkpoint_steps(dir), (std::vector<int64_t>{2, 10, 30}));
  prune_checkpoints(dir, 2);
  EXPECT_EQ(checkpoint_steps(dir), (std::vector<int64_t>{10, 30}));
  EXPECT_TRUE(fs::exists(dir / "step-40.h5.tmp"));  // a save in progress is not touched
  EXPECT_EQ(checkpoint_path(dir, 7), dir / "step-7.h5");
}

TEST(CheckpointFolder, PublishingSyncsThenRenamesIntoPlace) {
  const fs::path dir = fresh("publish");
  touch(dir / "step-5.h5.tmp", "whole");
  sync_file(dir / "step-5.h5.tmp", "checkpoint");
  publish_file(dir / "step-5.h5.tmp", dir / "step-5.h5", "checkpoint");
  EXPECT_FALSE(fs::exists(dir / "step-5.h5.tmp"));
  std::ifstream in(dir / "step-5.h5");
  std::string text;
  in >> text;
  EXPECT_EQ(text, "whole");
  // A missing file is an error naming it, and nothing appears under the final name.
  try {
    publish_file(dir / "step-6.h5.tmp", dir / "step-6.h5", "checkpoint");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step-6.h5"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "step-6.h5"));
  EXPECT_THROW(sync_file(dir / "missing.h5.tmp", "checkpoint"), Error);
}

}  // namespace
}  // namespace titan::ckpt

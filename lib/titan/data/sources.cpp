#include "titan/data/sources.h"

#include <filesystem>

#include "titan/core/error.h"
#include "titan/data/shard_loader.h"
#include "titan/data/synthetic.h"

namespace titan::data {

namespace fs = std::filesystem;

std::string dataset_folder(const std::string& dataset, const std::optional<std::string>& dataset_path) {
  if (dataset_path) return *dataset_path;
  if (dataset == "synthetic") return "";
  return (fs::path(kDatasetAssetsFolder) / dataset).string();
}

std::shared_ptr<const ShardSet> open_dataset(std::string_view section, const std::string& dataset,
                                             const std::optional<std::string>& dataset_path,
                                             ShardSplit split, int64_t vocab_size) {
  const std::string folder = dataset_folder(dataset, dataset_path);
  TITAN_CHECK(!folder.empty()) << section << ".dataset: synthetic has no shards";
  if (dataset_path) {
    TITAN_CHECK_INPUT(fs::is_directory(folder))
        << section << ".dataset_path: the shard folder " << folder << " does not exist; "
        << "point it at a folder that `titan-data tokenize --out` wrote, or unset it to use "
        << section << ".dataset";
  } else {
    std::error_code error;
    const fs::path absolute = fs::absolute(folder, error);
    TITAN_CHECK_INPUT(fs::is_directory(folder))
        << section << ".dataset: '" << dataset << "' reads the token shards in " << folder
        << " (relative to the current directory: " << absolute.string() << "), which does "
        << "not exist; run tools/fetch_assets.sh from the repository root (it makes "
        << "assets/data/sotu), run from the folder that holds assets/, or set "
        << section << ".dataset_path to a shard folder (or " << section
        << ".dataset: synthetic)";
  }
  return std::make_shared<const ShardSet>(ShardSet::open(folder, split, vocab_size));
}

std::unique_ptr<BatchSource> make_batch_source(const config::JobConfig& c, int64_t vocab_size,
                                               int64_t dp_rank, int64_t dp_degree) {
  const config::TrainingSection& t = c.training;
  const uint64_t seed = c.debug.effective_seed();
  if (t.dataset == "synthetic" && !t.dataset_path) {
    return std::make_unique<SyntheticBatchSource>(seed, vocab_size, t.local_batch_size, t.seq_len,
                                                  dp_rank, dp_degree);
  }
  std::shared_ptr<const ShardSet> shards =
      open_dataset("training", t.dataset, t.dataset_path, ShardSplit::Train, vocab_size);
  return std::make_unique<ShardBatchSource>(std::move(shards), seed, t.local_batch_size, t.seq_len,
                                            dp_rank, dp_degree);
}

std::unique_ptr<BatchSource> make_validation_source(const config::JobConfig& c, int64_t vocab_size,
                                                    int64_t dp_rank, int64_t dp_degree,
                                                    int64_t* windows) {
  const config::ValidationSection& v = c.validation;
  std::string dataset = v.dataset;
  std::optional<std::string> path = v.dataset_path;
  const std::string named = dataset_folder(v.dataset, std::nullopt);
  if (!path && (named.empty() || !std::filesystem::is_directory(named))) {
    dataset = c.training.dataset;  // the training shards' own validation split
    path = c.training.dataset_path;
  }
  std::shared_ptr<const ShardSet> shards =
      open_dataset("validation", dataset, path, ShardSplit::Validation, vocab_size);
  auto source = std::make_unique<ShardBatchSource>(std::move(shards), /*seed=*/0, v.local_batch_size,
                                                   v.seq_len, dp_rank, dp_degree);
  if (windows) *windows = source->windows_per_epoch();
  return source;
}

}  // namespace titan::data

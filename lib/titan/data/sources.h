// The data source a job config names (training.dataset, training.dataset_path), for the
// trainer and for tools that must see the same batches (the golden-data exporter).
//
//   training.dataset: synthetic        seeded random tokens (synthetic.h), no files
//   training.dataset: sotu             the token shards in ./assets/data/sotu/ (relative to
//                                      the current directory; tools/fetch_assets.sh makes them)
//   training.dataset_path: /data/mine  any shard folder (titan-data tokenize); wins when set
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "titan/config/job_config.h"
#include "titan/data/batch_source.h"
#include "titan/data/shards.h"

namespace titan::data {

// Where the project's named datasets live, relative to the current directory.
inline constexpr std::string_view kDatasetAssetsFolder = "assets/data";

// The shard folder of (dataset, dataset_path): dataset_path when set, else
// assets/data/<dataset>; empty for `synthetic` without a dataset_path.
std::string dataset_folder(const std::string& dataset, const std::optional<std::string>& dataset_path);

// Opens one split of a dataset's shards, checked against the model's vocab_size. `section`
// ("training", "validation") names the config keys in errors. A missing folder is an
// InputError naming it and the fix (tools/fetch_assets.sh, or <section>.dataset_path).
std::shared_ptr<const ShardSet> open_dataset(std::string_view section, const std::string& dataset,
                                             const std::optional<std::string>& dataset_path,
                                             ShardSplit split, int64_t vocab_size);

// The training source: synthetic tokens, or the training split of the dataset's shards,
// seeded with debug.seed. Rank dp_rank of dp_degree reads its slice of every global batch
// (the same rule for both sources: synthetic.h, shard_loader.h).
std::unique_ptr<BatchSource> make_batch_source(const config::JobConfig& config, int64_t vocab_size,
                                               int64_t dp_rank = 0, int64_t dp_degree = 1);

// The validation source (validation.*): the validation split of validation.dataset_path
// when set, else of assets/data/<validation.dataset> when that folder exists, else of the
// training dataset's folder; batches of validation.local_batch_size x validation.seq_len,
// rank dp_rank's slice of each global batch, in a fixed order (seed 0): every validation
// pass reads the same windows. `windows` gets the split's window count.
std::unique_ptr<BatchSource> make_validation_source(const config::JobConfig& config,
                                                    int64_t vocab_size, int64_t dp_rank,
                                                    int64_t dp_degree, int64_t* windows);

}  // namespace titan::data

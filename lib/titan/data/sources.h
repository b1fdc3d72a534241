// The data source a job config names (training.dataset), for the trainer and for tools
// that must see the same batches (the golden-data exporter).
#pragma once

#include <memory>

#include "titan/config/job_config.h"
#include "titan/data/batch_source.h"

namespace titan::data {

// `synthetic` today; a dataset whose pipeline is not built yet is an InputError (exit 2).
std::unique_ptr<BatchSource> make_batch_source(const config::JobConfig& config, int64_t vocab_size);

}  // namespace titan::data

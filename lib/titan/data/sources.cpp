#include "titan/data/sources.h"

#include "titan/core/error.h"
#include "titan/data/synthetic.h"

namespace titan::data {

std::unique_ptr<BatchSource> make_batch_source(const config::JobConfig& c, int64_t vocab_size) {
  TITAN_CHECK_INPUT(c.training.dataset == "synthetic")
      << "training.dataset: '" << c.training.dataset
      << "' needs the text data pipeline, which is not built yet in titan.cpp; use synthetic";
  return std::make_unique<SyntheticBatchSource>(c.debug.effective_seed(), vocab_size,
                                                c.training.local_batch_size, c.training.seq_len);
}

}  // namespace titan::data

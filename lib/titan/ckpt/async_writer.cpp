#include "titan/ckpt/async_writer.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace titan::ckpt {

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  try {
    wait();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: asynchronous checkpoint: %s\n", error.what());
  }
}

void AsyncCheckpointWriter::start(std::string path, distributed::Communicator& io,
                                  CheckpointMeta meta, std::vector<TensorPiece> pieces,
                                  std::function<void()> after) {
  wait();
  thread_ = std::thread([this, path = std::move(path), &io, meta = std::move(meta),
                         pieces = std::move(pieces), after = std::move(after)] {
    try {
      // Test-only: hold the write back so that a test sees training go on meanwhile,
      // whatever the machine's speed.
      if (const char* delay = std::getenv("TITAN_TEST_CHECKPOINT_WRITE_DELAY_S")) {
        std::this_thread::sleep_for(std::chrono::duration<double>(std::atof(delay)));
      }
      write_checkpoint_file(path, io, meta, pieces);
      if (after) after();
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

void AsyncCheckpointWriter::wait() {
  if (thread_.joinable()) thread_.join();
  if (error_) {
    std::exception_ptr error = error_;
    error_ = nullptr;
    std::rethrow_exception(error);
  }
}

}  // namespace titan::ckpt

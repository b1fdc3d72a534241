// checkpoint.async_mode: async. The state is copied aside (TensorPiece locals the caller
// owns alone) and one I/O thread writes it while training goes on. HDF5 1.10 here is not
// thread-safe, so while a save is in flight only that thread calls HDF5; its collective
// MPI-IO runs on the checkpoint communicator, apart from training's (MPI_THREAD_MULTIPLE).
// One save is in flight at a time: starting the next one, or wait(), waits for it.
//
//   AsyncCheckpointWriter writer;
//   writer.start(path, io, meta, copied_pieces, [&] { prune(...); });
//   ... training steps ...
//   writer.wait();   // rethrows what failed on the I/O thread
#pragma once

#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "titan/ckpt/checkpoint_file.h"

namespace titan::ckpt {

class AsyncCheckpointWriter {
 public:
  AsyncCheckpointWriter() = default;
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;
  ~AsyncCheckpointWriter();  // waits; an error then is printed, not thrown

  // Waits for the previous save, then writes on the I/O thread and calls `after` there
  // once the file is complete. `io` must outlive the save.
  void start(std::string path, distributed::Communicator& io, CheckpointMeta meta,
             std::vector<TensorPiece> pieces, std::function<void()> after);
  void wait();
  bool in_flight() const { return thread_.joinable(); }

 private:
  std::thread thread_;
  std::exception_ptr error_;
};

}  // namespace titan::ckpt

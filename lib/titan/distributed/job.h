// How every rank of a job ends, on success or on an error (docs/design.md, "Errors, exit codes,
// logs"): the ranks go through setup phases and then training, and a failure anywhere ends
// all of them with the table's exit code, never a hang.
//
//   distributed::Runtime runtime(&argc, &argv);
//   distributed::Job job(runtime);
//   if (!job.setup([&] { config = parse(...); })) return job.exit_code();
//   if (!job.setup([&] { mesh = ...; trainer = ...; })) return job.exit_code();
//   if (!job.train([&] { trainer->train(); })) return job.exit_code();
//   return 0;
//
// setup: the phase runs on every rank, then the ranks agree on the outcome (one all-reduce):
//   all succeeded                     -> true
//   every rank found bad input        -> rank 0 prints "error: <its line>"; exit 2 on all
//   anything else (some ranks only, or a failure that is not bad input)
//                                     -> each failing rank prints "[rank r] error: ...",
//                                        then MPI_Abort: exit 1
// A phase must not start collectives that other ranks could be left waiting in when it
// throws half-way; put each such step in its own phase (parse the config, then build the
// mesh, ...).
// train: errors end the job at once, without agreement:
//   DivergedError (every rank sees the same all-reduced loss) -> rank 0 prints; exit 3
//   bad input found mid-run (a broken shard)                  -> "[rank r] error: ..."; exit 2
//   anything else                                             -> "[rank r] error: ..."; exit 1
// On one rank the lines are "error: ..." and the codes the same.
#pragma once

#include <functional>

#include "titan/distributed/runtime.h"

namespace titan::distributed {

class Job {
 public:
  explicit Job(Runtime& runtime) : runtime_(runtime) {}

  // False when the job must end now with exit_code() (the error is printed).
  bool setup(const std::function<void()>& phase);
  bool train(const std::function<void()>& phase);
  int exit_code() const { return exit_code_; }

 private:
  void print_error(const char* message, bool with_rank) const;
  Runtime& runtime_;
  int exit_code_ = 0;
};

}  // namespace titan::distributed

#include "titan/distributed/job.h"

#include <cstdio>
#include <exception>
#include <string>

#include "titan/core/error.h"

namespace titan::distributed {
namespace {

// A phase's outcome, ordered so that the all-reduced maximum is the worst one.
enum Outcome : int64_t { kSucceeded = 0, kBadInput = 1, kFailed = 2 };

}  // namespace

void Job::print_error(const char* message, bool with_rank) const {
  if (with_rank) {
    std::fprintf(stderr, "[rank %d] error: %s\n", runtime_.rank(), message);
  } else {
    std::fprintf(stderr, "error: %s\n", message);
  }
  std::fflush(stderr);
}

bool Job::setup(const std::function<void()>& phase) {
  const bool alone = runtime_.world_size() == 1;
  Outcome outcome = kSucceeded;
  std::string message;
  try {
    phase();
  } catch (const InputError& error) {
    outcome = kBadInput;
    message = error.what();
  } catch (const std::exception& error) {
    outcome = kFailed;
    message = error.what();
    if (!alone) print_error(error.what(), true);  // now: the job may be aborted soon
  }
  if (alone) {
    if (outcome == kSucceeded) return true;
    print_error(message.c_str(), false);
    exit_code_ = int(outcome == kBadInput ? ExitCode::BadInput : ExitCode::Failure);
    return false;
  }
  Communicator& world = runtime_.world();
  const int64_t worst = all_reduce_scalar(world, int64_t(outcome), ReduceOp::Max);
  const int64_t best = all_reduce_scalar(world, int64_t(outcome), ReduceOp::Min);
  if (worst == kSucceeded) return true;
  if (worst == kBadInput && best == kBadInput) {  // the same bad input, seen by every rank
    if (runtime_.rank() == 0) print_error(message.c_str(), false);
    exit_code_ = int(ExitCode::BadInput);
    return false;
  }
  if (outcome == kBadInput) print_error(message.c_str(), true);
  runtime_.abort(int(ExitCode::Failure));
}

bool Job::train(const std::function<void()>& phase) {
  const bool alone = runtime_.world_size() == 1;
  try {
    phase();
    return true;
  } catch (const DivergedError& error) {
    if (runtime_.rank() == 0) print_error(error.what(), false);
    exit_code_ = int(ExitCode::Diverged);
    return false;
  } catch (const InputError& error) {
    print_error(error.what(), !alone);
    exit_code_ = int(ExitCode::BadInput);
  } catch (const std::exception& error) {
    print_error(error.what(), !alone);
    exit_code_ = int(ExitCode::Failure);
  }
  if (alone) return false;
  runtime_.abort(exit_code_);
}

}  // namespace titan::distributed

// The main of distributed_mpi_tests: runs GoogleTest on every rank of an mpirun job (CTest names
// the runs distributed.<Suite>.np<N>, see test/CMakeLists.txt). Rank 0 prints the usual report;
// the other ranks print only their failures, with their rank. Every rank exits with the
// same verdict, so mpirun's exit status is the job's.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>

#include "distributed_test_main.h"

namespace {

titan::distributed::Runtime* g_runtime = nullptr;

class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  // The test's name is kept here: asking GoogleTest for it inside OnTestPartResult
  // deadlocks on GoogleTest's own lock.
  void OnTestStart(const testing::TestInfo& test) override {
    test_ = std::string(test.test_suite_name()) + "." + test.name();
  }
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s failed at %s:%d\n%s\n", rank_, test_.c_str(),
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
    std::fflush(stderr);
  }

 private:
  int rank_;
  std::string test_;
};

}  // namespace

titan::distributed::Runtime& test_runtime() { return *g_runtime; }
titan::distributed::Communicator& test_world() { return g_runtime->world(); }

int main(int argc, char** argv) {
  std::unique_ptr<titan::distributed::Runtime> runtime;
  try {
    runtime = std::make_unique<titan::distributed::Runtime>(&argc, &argv);
  } catch (const titan::InputError& e) {  // the runtime's start-up check (srun without pmix)
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  g_runtime = runtime.get();
  // Generous for an oversubscribed 2-core machine; a hang still ends as a failure.
  titan::distributed::set_comm_timeout(120, "distributed_mpi_tests");
  testing::InitGoogleTest(&argc, argv);
  if (runtime->rank() != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(runtime->rank()));
  }
  const int result = RUN_ALL_TESTS();
  const int64_t failed_anywhere = titan::distributed::all_reduce_scalar(
      runtime->world(), int64_t{result != 0}, titan::distributed::ReduceOp::Max);
  return failed_anywhere != 0 ? 1 : 0;
}

#include <gtest/gtest.h>
#include <omp.h>

#include <cstdlib>
#include <thread>

#include "titan/core/threads.h"

namespace titan {
namespace {

// Restores OMP_NUM_THREADS (CTest sets it) after a test changes it.
class ThreadRule : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* v = std::getenv("OMP_NUM_THREADS")) saved_ = v;
  }
  void TearDown() override {
    if (saved_.empty()) unsetenv("OMP_NUM_THREADS");
    else setenv("OMP_NUM_THREADS", saved_.c_str(), 1);
    configure_threads(1);
  }
  std::string saved_;
};

TEST_F(ThreadRule, SplitsCoresBetweenRanksOnANode) {
  unsetenv("OMP_NUM_THREADS");
  const int cores = int(std::thread::hardware_concurrency());
  EXPECT_EQ(configure_threads(1), cores);
  EXPECT_EQ(thread_count(), cores);
  EXPECT_EQ(configure_threads(cores), 1);
  EXPECT_EQ(configure_threads(4 * cores), 1);  // oversubscribed: never zero threads
}

TEST_F(ThreadRule, OmpNumThreadsWins) {
  setenv("OMP_NUM_THREADS", "3", 1);
  EXPECT_EQ(configure_threads(64), 3);
  EXPECT_EQ(omp_get_max_threads(), 3);
}

TEST(Blas, ReportsItsCore) {
  EXPECT_FALSE(blas_core_name().empty());
  if (!cpu_has_avx512()) {
    EXPECT_EQ(blas_core_warning(), "");
  }
}

}  // namespace
}  // namespace titan

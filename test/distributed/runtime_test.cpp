// The runtime under mpirun (run at np 2): topology from MPI and the thread rule.
#include <gtest/gtest.h>

#include "distributed_test_main.h"
#include "titan/core/threads.h"

namespace titan::distributed {
namespace {

TEST(Runtime, TopologyComesFromMpi) {
  Runtime& runtime = test_runtime();
  const Topology& topology = runtime.topology();
  EXPECT_EQ(topology.world_size, test_world().size());
  EXPECT_EQ(topology.rank, test_world().rank());
  EXPECT_EQ(test_world().name(), "world");
  int64_t ranks = 0;
  for (int count : topology.ranks_per_host) ranks += count;
  EXPECT_EQ(ranks, topology.world_size);
  EXPECT_EQ(int(topology.hosts.size()), topology.node_count);
  EXPECT_GE(topology.node_rank, 0);
  EXPECT_LT(topology.node_rank, topology.node_count);
  EXPECT_EQ(topology.local_size, topology.ranks_per_host[size_t(topology.node_rank)]);
  EXPECT_LT(topology.local_rank, topology.local_size);
  // Every local rank appears once per host: their sum over the world is known.
  int64_t expected_local_sum = 0;
  for (int count : topology.ranks_per_host) expected_local_sum += int64_t(count) * (count - 1) / 2;
  EXPECT_EQ(all_reduce_scalar(test_world(), int64_t{topology.local_rank}), expected_local_sum);
  EXPECT_NE(topology.describe().find(std::to_string(topology.world_size) + " rank"), std::string::npos)
      << topology.describe();
}

TEST(Runtime, OmpNumThreadsWins) {
  // CTest sets OMP_NUM_THREADS=1 for these runs; the thread rule must not override it.
  const char* threads = std::getenv("OMP_NUM_THREADS");
  if (threads == nullptr) GTEST_SKIP() << "OMP_NUM_THREADS is not set";
  EXPECT_EQ(thread_count(), std::atoi(threads));
}

}  // namespace
}  // namespace titan::distributed

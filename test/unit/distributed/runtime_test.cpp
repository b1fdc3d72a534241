// The parts of the runtime that need no launcher: Slurm's task count against the world,
// and the topology's one-line description.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "titan/distributed/runtime.h"

namespace titan::distributed {
namespace {

// A getenv over a fixed set of variables.
std::function<const char*(const char*)> fake_env(std::map<std::string, std::string> variables) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(variables));
  return [shared](const char* name) -> const char* {
    const auto found = shared->find(name);
    return found == shared->end() ? nullptr : found->second.c_str();
  };
}

TEST(SlurmWorld, NothingToCheckOutsideSlurm) {
  EXPECT_NO_THROW(check_slurm_world(4, fake_env({})));
  // A batch script has SLURM_NTASKS but is not a step: the allocation, not this launch.
  EXPECT_NO_THROW(check_slurm_world(1, fake_env({{"SLURM_NTASKS", "8"}})));
}

TEST(SlurmWorld, MatchingTaskCountPasses) {
  EXPECT_NO_THROW(check_slurm_world(8, fake_env({{"SLURM_STEP_NUM_TASKS", "8"}})));
  EXPECT_NO_THROW(check_slurm_world(8, fake_env({{"SLURM_STEP_ID", "0"}, {"SLURM_NTASKS", "8"}})));
}

TEST(SlurmWorld, MismatchIsBadInputNamingBothCountsAndTheFix) {
  try {
    check_slurm_world(1, fake_env({{"SLURM_STEP_NUM_TASKS", "8"}, {"SLURM_NTASKS", "16"}}));
    FAIL() << "no throw";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "srun started 8 tasks but MPI sees a world of 1: launch with `srun --mpi=pmix` "
                 "(Debian's Open MPI has no PMI2 support)");
  }
  EXPECT_THROW(check_slurm_world(1, fake_env({{"SLURM_STEP_ID", "3"}, {"SLURM_NTASKS", "4"}})),
               InputError);
}

TEST(SlurmWorld, MpirunInsideAnAllocationIsNotChecked) {
  // mpirun's daemons are the step's tasks (one per node); the ranks are its children.
  EXPECT_NO_THROW(check_slurm_world(
      16, fake_env({{"SLURM_STEP_NUM_TASKS", "2"}, {"OMPI_MCA_orte_hnp_uri", "1.0;tcp://x:1"}})));
}

TEST(SlurmWorld, ReadsTheRealEnvironmentByDefault) {
  ASSERT_EQ(std::getenv("SLURM_STEP_NUM_TASKS"), nullptr) << "run this test outside srun";
  setenv("SLURM_STEP_NUM_TASKS", "3", 1);
  EXPECT_THROW(check_slurm_world(2), InputError);
  EXPECT_NO_THROW(check_slurm_world(3));
  unsetenv("SLURM_STEP_NUM_TASKS");
}

TEST(Topology, DescribesRanksAndHosts) {
  Topology alone;
  alone.hosts = {"vm"};
  alone.ranks_per_host = {1};
  EXPECT_EQ(alone.describe(), "1 rank on 1 host: vm (1)");
  Topology two;
  two.world_size = 4;
  two.node_count = 2;
  two.hosts = {"a", "b"};
  two.ranks_per_host = {2, 2};
  EXPECT_EQ(two.describe(), "4 ranks on 2 hosts: a (2), b (2)");
}

}  // namespace
}  // namespace titan::distributed

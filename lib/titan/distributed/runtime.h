// The process's place in the job: MPI start-up and shut-down, the topology (hosts, ranks per
// host, this rank's local rank), the thread rule and, on a CUDA build, the GPU.
//
//   int main(int argc, char** argv) {
//     distributed::Runtime runtime(&argc, &argv);      // MPI_Init_thread, topology, threads, GPU
//     distributed::Communicator& world = runtime.world();
//     ...
//   }                                           // MPI_Finalize
//
// MPI starts only under a launcher: on a build with MPI, when the environment has one of
// OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK, PMI_SIZE or SLURM_STEP_NUM_TASKS (or MPI is
// already initialized). Otherwise (TITAN_MPI=OFF, or a plain `titan-train` started alone)
// MPI_Init is skipped, which keeps the many single-process runs fast, and the world is one
// rank: a SelfCommunicator named "world". Under `srun` the world size must equal
// SLURM_STEP_NUM_TASKS: a mismatch means each task started alone (srun without
// --mpi=pmix) and is an InputError, thrown after MPI is finalized again. Rank 0 logs the
// topology once; log::set_rank gets this rank.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "titan/distributed/communicator.h"

namespace titan::distributed {

struct Topology {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_size = 1;  // among the ranks of this host
  int node_rank = 0, node_count = 1;
  std::vector<std::string> hosts;          // one per node, in node order
  std::vector<int> ranks_per_host;         // parallel to hosts
  std::string describe() const;            // "2 ranks on 1 host: host-a (2)"
};

// Checks a Slurm step's task count against the MPI world; `getenv` is injectable for tests.
// No SLURM_STEP_NUM_TASKS (SLURM_NTASKS counts only inside a step, when SLURM_STEP_ID is
// set): nothing to check. Nor under Open MPI's mpirun (OMPI_MCA_orte_hnp_uri), whose
// daemons are the Slurm tasks when it runs inside an allocation.
void check_slurm_world(int world_size,
                       const std::function<const char*(const char*)>& getenv = nullptr);

// The ranks on this process's host: the topology of the process's Runtime; 1 before one
// exists (a test building trainers alone).
int ranks_on_this_host();

// Whether a second thread may use its own communicator while the main thread uses another
// (MPI granted MPI_THREAD_MULTIPLE, or no MPI at all); set by Runtime.
bool& threads_may_communicate();

class Runtime {
 public:
  // Initializes MPI when built with it (MPI_THREAD_MULTIPLE), finds the topology, applies
  // the thread rule (configure_threads(local_size)) and picks GPU local_rank % count.
  Runtime(int* argc, char*** argv);
  ~Runtime();  // MPI_Finalize, when this Runtime initialized MPI
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const Topology& topology() const { return topology_; }
  int rank() const { return topology_.rank; }
  int world_size() const { return topology_.world_size; }
  Communicator& world() { return *world_; }

  // Flushes stdout and stderr, then ends every rank of the job with `code` (MPI_Abort);
  // without MPI, std::_Exit(code).
  [[noreturn]] void abort(int code);

 private:
  Topology topology_;
  std::unique_ptr<Communicator> world_;
  bool mpi_initialized_here_ = false;
};

}  // namespace titan::distributed

#include "titan/distributed/mpi/mpi_runtime.h"

#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "titan/distributed/mpi/mpi_check.h"
#include "titan/distributed/mpi/mpi_communicator.h"

namespace titan::distributed::mpi {

bool started_by_launcher() {
  for (const char* variable :
       {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    if (std::getenv(variable) != nullptr) return true;
  }
  return false;
}

bool initialize(int* argc, char*** argv) {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    // MULTIPLE: an asynchronous checkpoint's I/O thread does collective MPI-IO on its own
    // communicator while training goes on (checkpoint.async_mode, docs/checkpoints.md).
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  } else {
    MPI_CHECK(MPI_Query_thread(&provided));
  }
  threads_may_communicate() = provided >= MPI_THREAD_MULTIPLE;
  return !initialized;
}

bool running() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void check_not_finalized() {
  int finalized = 0;
  MPI_CHECK(MPI_Finalized(&finalized));
  TITAN_CHECK(!finalized) << "MPI was finalized by an earlier Runtime: one per process under MPI";
}

void finalize() {
  if (running()) MPI_Finalize();
}

Topology topology() {
  Topology topology;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &topology.rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &topology.world_size));

  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, topology.rank,
                                MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_rank(node, &topology.local_rank));
  MPI_CHECK(MPI_Comm_size(node, &topology.local_size));
  MPI_CHECK(MPI_Comm_free(&node));

  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int length = 0;
  MPI_CHECK(MPI_Get_processor_name(name, &length));
  std::vector<char> names(size_t(topology.world_size) * MPI_MAX_PROCESSOR_NAME);
  MPI_CHECK(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names.data(),
                          MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD));
  for (int rank = 0; rank < topology.world_size; ++rank) {
    const char* begin = names.data() + size_t(rank) * MPI_MAX_PROCESSOR_NAME;
    const std::string host(begin, strnlen(begin, MPI_MAX_PROCESSOR_NAME));
    size_t node_index = 0;
    while (node_index < topology.hosts.size() && topology.hosts[node_index] != host) ++node_index;
    if (node_index == topology.hosts.size()) {
      topology.hosts.push_back(host);
      topology.ranks_per_host.push_back(0);
    }
    ++topology.ranks_per_host[node_index];
    if (rank == topology.rank) topology.node_rank = int(node_index);
  }
  topology.node_count = int(topology.hosts.size());
  return topology;
}

std::unique_ptr<Communicator> world() { return MpiCommunicator::world(); }

void abort(int code) {
  if (running()) MPI_Abort(MPI_COMM_WORLD, code);
}

std::string library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  if (MPI_Get_library_version(text, &length) != MPI_SUCCESS) return "built (version unknown)";
  std::string version(text, size_t(length));
  // Open MPI's string runs over several comma-separated fields; the first names it.
  if (const size_t cut = version.find_first_of(",\n"); cut != std::string::npos) {
    version.resize(cut);
  }
  return version;
}

}  // namespace titan::distributed::mpi

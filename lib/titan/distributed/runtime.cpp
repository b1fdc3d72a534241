#include "titan/distributed/runtime.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "titan/config.h"
#include "titan/core/device_select.h"
#include "titan/core/error.h"
#include "titan/core/logging.h"
#include "titan/core/threads.h"

#if TITAN_HAVE_MPI
#include <mpi.h>

#include "titan/distributed/mpi/mpi_check.h"
#include "titan/distributed/mpi/mpi_communicator.h"
#endif

namespace titan::distributed {
namespace {

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

std::string plural(int count, const char* noun) {
  return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

#if TITAN_HAVE_MPI
// A launcher leaves one of these in each rank's environment; a process started alone has
// none, and then skips MPI_Init (which costs a second or more) and runs as one rank.
bool started_by_launcher() {
  for (const char* variable :
       {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    if (std::getenv(variable) != nullptr) return true;
  }
  return false;
}

// Ranks and hosts from MPI itself (the launcher's variables are for logs only): local rank
// and size from the shared-memory split, hosts by processor name in order of first rank.
Topology mpi_topology() {
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
#endif

}  // namespace

std::string Topology::describe() const {
  std::string text = plural(world_size, "rank") + " on " + plural(node_count, "host") + ":";
  for (size_t i = 0; i < hosts.size(); ++i) {
    text += (i == 0 ? " " : ", ") + hosts[i] + " (" + std::to_string(ranks_per_host[i]) + ")";
  }
  return text;
}

void check_slurm_world(int world_size, const std::function<const char*(const char*)>& getenv) {
  auto variable = [&](const char* name) -> const char* {
    const char* value = getenv ? getenv(name) : std::getenv(name);
    return value != nullptr && value[0] != '\0' ? value : nullptr;
  };
  // Under mpirun inside an allocation, Slurm's tasks are mpirun's daemons, not the ranks.
  if (variable("OMPI_MCA_orte_hnp_uri") != nullptr) return;
  const char* tasks = variable("SLURM_STEP_NUM_TASKS");
  // SLURM_NTASKS alone is also set in a batch script, where it describes the allocation.
  if (tasks == nullptr && variable("SLURM_STEP_ID") != nullptr) tasks = variable("SLURM_NTASKS");
  if (tasks == nullptr) return;
  char* end = nullptr;
  const long slurm_tasks = std::strtol(tasks, &end, 10);
  if (end == tasks || *end != '\0') return;  // not a number: nothing we can compare
  TITAN_CHECK_INPUT(slurm_tasks == world_size)
      << "srun started " << slurm_tasks << " tasks but MPI sees a world of " << world_size
      << ": launch with `srun --mpi=pmix` (Debian's Open MPI has no PMI2 support)";
}

bool& threads_may_communicate() {
  static bool allowed = true;  // one rank without MPI: nothing to coordinate
  return allowed;
}

Runtime::Runtime(int* argc, char*** argv) {
#if TITAN_HAVE_MPI
  if (started_by_launcher()) {
    int initialized = 0;
    MPI_CHECK(MPI_Initialized(&initialized));
    int provided = MPI_THREAD_SINGLE;
    if (!initialized) {
      // MULTIPLE: an asynchronous checkpoint's I/O thread does collective MPI-IO on its own
      // communicator while training goes on (notes/hdf5-formats-launch.md §2).
      MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
      mpi_initialized_here_ = true;
    } else {
      MPI_CHECK(MPI_Query_thread(&provided));
    }
    threads_may_communicate() = provided >= MPI_THREAD_MULTIPLE;
  }
#else
  (void)argc;
  (void)argv;
#endif
  // Once MPI is up, a failure below must still finalize it, or an input error (exit 2)
  // would look like a crash to the launcher.
  try {
#if TITAN_HAVE_MPI
    int initialized = 0, finalized = 0;
    MPI_CHECK(MPI_Initialized(&initialized));
    MPI_CHECK(MPI_Finalized(&finalized));
    TITAN_CHECK(!finalized) << "MPI was finalized by an earlier Runtime: one per process under MPI";
    if (initialized) {
      world_ = MpiCommunicator::world();
      topology_ = mpi_topology();
    }
#endif
    if (!world_) {
      world_ = std::make_unique<SelfCommunicator>("world");
      topology_.hosts = {host_name()};
      topology_.ranks_per_host = {1};
    }
    log::set_rank(topology_.rank);
    check_slurm_world(topology_.world_size);
    const int threads = configure_threads(topology_.local_size);
    const int device = select_cuda_device(topology_.local_rank);
    // Alone, the line would only precede a one-line error or the run's own start-up lines.
    if (topology_.rank == 0 && topology_.world_size > 1) {
      const std::string gpu = device >= 0 ? "; GPU: local rank % devices (rank 0: cuda:" +
                                                std::to_string(device) + ")"
                                          : "";
      log::info("%s; %s per rank%s", topology_.describe().c_str(),
                plural(threads, "thread").c_str(), gpu.c_str());
    }
  } catch (...) {
    world_.reset();
#if TITAN_HAVE_MPI
    if (mpi_initialized_here_) MPI_Finalize();
#endif
    throw;
  }
}

Runtime::~Runtime() {
  // Operations abandoned after a timeout may still finish when every peer is here to shut
  // down; MPI_Finalize with requests pending is not allowed.
  if (abandoned_operation_count() > 0 && !complete_abandoned_operations(5.0)) {
    log::warn("%lld communicator operations never completed; shutting down anyway",
              static_cast<long long>(abandoned_operation_count()));
  }
  world_.reset();  // MPI_Comm_free before MPI_Finalize
#if TITAN_HAVE_MPI
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (mpi_initialized_here_ && !finalized) MPI_Finalize();
#endif
}

void Runtime::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#if TITAN_HAVE_MPI
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

}  // namespace titan::distributed

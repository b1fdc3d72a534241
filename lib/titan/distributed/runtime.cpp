#include "titan/distributed/runtime.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "titan/build_config.h"
#include "titan/core/device_select.h"
#include "titan/core/error.h"
#include "titan/core/logging.h"
#include "titan/core/threads.h"

#if TITAN_HAVE_MPI
#include "titan/distributed/mpi/mpi_runtime.h"
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

namespace {
int host_ranks = 1;  // the topology's local_size, once a Runtime found it
}  // namespace

int ranks_on_this_host() { return host_ranks; }

bool& threads_may_communicate() {
  static bool allowed = true;  // one rank without MPI: nothing to coordinate
  return allowed;
}

Runtime::Runtime(int* argc, char*** argv) {
#if TITAN_HAVE_MPI
  // Alone, MPI_Init (a second or more) is skipped: the many single-process runs stay fast.
  if (mpi::started_by_launcher()) mpi_initialized_here_ = mpi::initialize(argc, argv);
#else
  (void)argc;
  (void)argv;
#endif
  // Once MPI is up, a failure below must still finalize it, or an input error (exit 2)
  // would look like a crash to the launcher.
  try {
#if TITAN_HAVE_MPI
    mpi::check_not_finalized();
    if (mpi::running()) {
      world_ = mpi::world();
      topology_ = mpi::topology();
    }
#endif
    if (!world_) {
      world_ = std::make_unique<SelfCommunicator>("world");
      topology_.hosts = {host_name()};
      topology_.ranks_per_host = {1};
    }
    log::set_rank(topology_.rank);
    host_ranks = topology_.local_size;
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
    if (mpi_initialized_here_) mpi::finalize();
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
  if (mpi_initialized_here_) mpi::finalize();
#endif
}

void Runtime::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#if TITAN_HAVE_MPI
  mpi::abort(code);
#endif
  std::_Exit(code);
}

}  // namespace titan::distributed

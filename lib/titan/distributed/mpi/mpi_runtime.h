// MPI's part of the process runtime (distributed/runtime.h): whether a launcher started this
// process, MPI_Init_thread and MPI_Finalize, the topology as MPI sees it, the world
// communicator, MPI_Abort, and the library's version. The header names no MPI type, so
// distributed::Runtime and the --version text use it without MPI's headers.
#pragma once

#include <memory>
#include <string>

#include "titan/distributed/communicator.h"
#include "titan/distributed/runtime.h"

namespace titan::distributed::mpi {

// A launcher leaves one of OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK, PMI_SIZE or
// SLURM_STEP_NUM_TASKS in each rank's environment; a process started alone has none.
bool started_by_launcher();

// MPI_Init_thread asking for MPI_THREAD_MULTIPLE, unless MPI is initialized already (then
// its thread level is queried). Returns whether this call initialized MPI; sets
// threads_may_communicate() to whether MULTIPLE was granted.
bool initialize(int* argc, char*** argv);
// MPI_Init was called and MPI_Finalize was not.
bool running();
// Throws if MPI was finalized already (one Runtime per process).
void check_not_finalized();
void finalize();  // MPI_Finalize, if running

// Ranks and hosts from MPI itself (the launcher's variables are for logs only): local rank
// and size from the shared-memory split, hosts by processor name in order of first rank.
Topology topology();
// A duplicate of MPI_COMM_WORLD named "world".
std::unique_ptr<Communicator> world();
// MPI_Abort on MPI_COMM_WORLD with `code`, if running; returns otherwise.
void abort(int code);

// The library's own name and version (the first field of MPI_Get_library_version); callable
// before MPI_Init, so --version needs no launcher.
std::string library_version();

}  // namespace titan::distributed::mpi

#include "titan/core/build_info.h"

#include <cstdio>
#include <sstream>

#include "titan/config.h"
#include "titan/core/threads.h"

#if TITAN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif
#if TITAN_HAVE_NCCL
#include <nccl.h>
#endif
#if TITAN_HAVE_MPI
#include <mpi.h>
#endif
#if TITAN_HAVE_HDF5
#include <hdf5.h>
#endif

namespace titan {
namespace {

// CUDA and NCCL encode versions as integers: 12040 -> 12.4, 22105 -> 2.21.5.
std::string cuda_runtime_version() {
#if TITAN_HAVE_CUDA
  int version = 0;
  if (cudaRuntimeGetVersion(&version) != cudaSuccess) return "built with CUDA (runtime unknown)";
  return "yes, runtime " + std::to_string(version / 1000) + "." +
         std::to_string(version % 1000 / 10);
#else
  return "no";
#endif
}

std::string nccl_version() {
#if TITAN_HAVE_NCCL
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "built (version unknown)";
  const int major = version >= 10000 ? version / 10000 : version / 1000;
  const int minor = version >= 10000 ? version / 100 % 100 : version / 100 % 10;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(version % 100);
#else
  return "no";
#endif
}

std::string mpi_library() {
#if TITAN_HAVE_MPI
  // Callable before MPI_Init, so --version needs no launcher.
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  if (MPI_Get_library_version(text, &length) != MPI_SUCCESS) return "built (version unknown)";
  std::string version(text, size_t(length));
  // Open MPI's string runs over several comma-separated fields; the first names it.
  if (const size_t cut = version.find_first_of(",\n"); cut != std::string::npos) {
    version.resize(cut);
  }
  return version;
#else
  return "no (single-process world)";
#endif
}

std::string hdf5_version() {
#if TITAN_HAVE_HDF5
  unsigned major = 0, minor = 0, release = 0;
  if (H5get_libversion(&major, &minor, &release) < 0) return "built (version unknown)";
  std::string text = std::to_string(major) + "." + std::to_string(minor) + "." +
                     std::to_string(release);
#ifdef H5_HAVE_PARALLEL
  return text + " (parallel)";
#else
  return text + " (serial)";
#endif
#else
  return "no (checkpoints disabled)";
#endif
}

}  // namespace

std::string build_info_text() {
  std::ostringstream out;
  char gflops[32];
  std::snprintf(gflops, sizeof gflops, "%.1f", measure_sgemm_gflops());
  out << "titan.cpp " << TITAN_VERSION << " (" << TITAN_BUILD_TYPE << ")\n"
      << "CUDA: " << cuda_runtime_version() << "\n"
      << "NCCL: " << nccl_version() << "\n"
      << "MPI: " << mpi_library() << "\n"
      << "HDF5: " << hdf5_version() << "\n"
      << "BLAS: OpenBLAS " << TITAN_OPENBLAS_VERSION << " (" << TITAN_OPENBLAS_FLAVOUR
      << " threads), core " << blas_core_name()
      << ", sgemm " << gflops << " GFLOP/s\n";
  if (const std::string warning = blas_core_warning(); !warning.empty()) {
    out << "BLAS warning: " << warning << "\n";
  }
  out << "threads: " << thread_count() << "\n";
  return out.str();
}

}  // namespace titan

#include "titan/app/build_info.h"

#include <cstdio>
#include <sstream>

#include "titan/build_config.h"
#include "titan/ckpt/checkpoint_file.h"
#include "titan/core/device_select.h"
#include "titan/core/threads.h"
#include "titan/ops/cpu/kernel_isa.h"
#include "titan/ops/matmul.h"
#if TITAN_HAVE_MPI
#include "titan/distributed/mpi/mpi_runtime.h"
#endif
#if TITAN_HAVE_NCCL
#include "titan/distributed/nccl/nccl_backend.h"
#endif

namespace titan::app {

// Each backend reports its own library's version; a build without it says what that means.
std::string build_info_text() {
  std::ostringstream out;
  char gflops[32];
  std::snprintf(gflops, sizeof gflops, "%.1f", ops::measure_sgemm_gflops());
#if TITAN_HAVE_NCCL
  const std::string nccl = distributed::nccl::library_version();
#else
  const std::string nccl = "no";
#endif
#if TITAN_HAVE_MPI
  const std::string mpi = distributed::mpi::library_version();
#else
  const std::string mpi = "no (single-process world)";
#endif
  out << "titan.cpp " << TITAN_VERSION << " (" << TITAN_BUILD_TYPE << ")\n"
      << "CUDA: " << cuda_runtime_version() << "\n"
      << "NCCL: " << nccl << "\n"
      << "MPI: " << mpi << "\n"
      << "HDF5: " << ckpt::checkpoint_library_version() << "\n"
      << "BLAS: OpenBLAS " << TITAN_OPENBLAS_VERSION << " (" << TITAN_OPENBLAS_FLAVOUR
      << " threads), core " << blas_core_name() << "\n"
      << "GEMM: " << ops::cpu::gemm_library_name() << ", sgemm " << gflops << " GFLOP/s\n";
  if (const std::string warning = ops::cpu_gemm_warning(); !warning.empty()) {
    out << "GEMM warning: " << warning << "\n";
  }
  out << "CPU kernels: " << ops::cpu::kernel_isa_name() << "\n"
      << "CPU bf16: "
      << (cpu_has_bf16() ? std::string("AVX512_BF16") + (cpu_has_amx_bf16() ? ", AMX" : "") +
                               ", bf16 GEMMs " + ops::cpu::bf16_gemm_name()
                         : std::string("no AVX512_BF16 (mixed precision refused on this CPU)"))
      << "\n"
      << "threads: " << thread_count() << "\n";
  return out.str();
}

}  // namespace titan::app

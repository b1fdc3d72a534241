// The thread rule (docs/design.md, "Threads and BLAS") and what the BLAS library is doing.
//
// Each rank uses max(1, cores / ranks on its node) threads for OpenMP and OpenBLAS unless
// OMP_NUM_THREADS is set, so that oversubscribed test runs do not fight over cores.
// OpenBLAS picks its kernels when it loads (OPENBLAS_CORETYPE); Debian's 0.3.21 falls back
// to generic kernels on recent AVX-512 Xeons, about 6x slower, and the engine can only
// notice and say so.
#pragma once

#include <string>

namespace titan {

// Applies the rule and returns the thread count now in force.
int configure_threads(int ranks_on_node);
int thread_count();

std::string blas_core_name();          // openblas_get_corename()
bool cpu_has_avx512();
// A one-line warning with the fix when OpenBLAS runs a generic core on an AVX-512 CPU;
// empty when all is well.
std::string blas_core_warning();

}  // namespace titan

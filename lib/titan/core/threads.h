// The thread rule (docs/design.md, "Threads and BLAS") and what the BLAS library is doing.
//
// Each rank uses max(1, cores / ranks on its node) threads for OpenMP and OpenBLAS unless
// OMP_NUM_THREADS is set, so that oversubscribed test runs do not fight over cores.
// OpenBLAS picks its kernels when it loads (OPENBLAS_CORETYPE); Debian's 0.3.21 falls back
// to generic kernels on recent AVX-512 Xeons, about 6x slower, and the engine can only
// notice and say so.
#pragma once

#include <cstdint>
#include <string>

namespace titan {

// Whether a CPU kernel's loop over `work` elements (or element-sized steps) is worth an
// OpenMP team: below 2^15 waking the threads costs more than the loop, and on a loaded or
// oversubscribed machine far more, so such loops run on the calling thread. Every kernel's
// `#pragma omp parallel ... if (worth_threads(work))` asks this one rule. A loop's results
// never depend on whether it ran threaded (each element is written by one iteration).
inline bool worth_threads(int64_t work) { return work >= (int64_t(1) << 15); }

// Applies the rule and returns the thread count now in force.
int configure_threads(int ranks_on_node);
int thread_count();

std::string blas_core_name();          // openblas_get_corename()
bool cpu_has_avx512();
// AVX512_BF16 (Cooper Lake, Sapphire Rapids and later Xeons; Zen 4 and later): bf16 dot
// products in hardware, which the trainer asks of a CPU before it computes in bf16
// (train::compute_dtype_for; whether its GEMMs use them is ops/matmul.h's bf16_gemm()).
bool cpu_has_bf16();
// AMX with its bf16 tile multiplies (Sapphire Rapids and later Xeons), enabled by the OS.
bool cpu_has_amx_bf16();
// A one-line warning with the fix when OpenBLAS runs a generic core on an AVX-512 CPU;
// empty when all is well.
std::string blas_core_warning();

}  // namespace titan

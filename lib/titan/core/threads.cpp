#include "titan/core/threads.h"

#include <omp.h>
#include <cblas.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <thread>

namespace titan {

int configure_threads(int ranks_on_node) {
  int threads = 0;
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env != nullptr && std::atoi(env) > 0) {
    threads = std::atoi(env);
  } else {
    const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
    threads = std::max(1, cores / std::max(1, ranks_on_node));
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  return threads;
}

int thread_count() { return omp_get_max_threads(); }

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
}

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

bool cpu_has_bf16() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (eax & (1u << 5)) != 0;  // CPUID.(EAX=7, ECX=1):EAX bit 5, AVX512_BF16
#else
  return false;
#endif
}

bool cpu_has_amx_bf16() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool amx = (edx & (1u << 22)) != 0 && (edx & (1u << 24)) != 0;  // AMX-BF16, AMX-TILE
  const bool osxsave = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 27)) != 0;
  if (!amx || !osxsave) return false;
  unsigned xcr0_low = 0, xcr0_high = 0;
  __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  return (xcr0_low & (3u << 17)) == (3u << 17);  // the OS saves the tile state
#else
  return false;
#endif
}

std::string blas_core_warning() {
  const std::string core = blas_core_name();
  std::string lower = core;
  for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  const bool avx512_kernels = lower.find("skylakex") != std::string::npos ||
                              lower.find("cooperlake") != std::string::npos ||
                              lower.find("sapphirerapids") != std::string::npos;
  if (!cpu_has_avx512() || avx512_kernels) return "";
  return "OpenBLAS chose its " + core +
         " kernels on an AVX-512 CPU (about 6x slower sgemm); set OPENBLAS_CORETYPE=SKYLAKEX "
         "before starting (run_train.sh does this)";
}

}  // namespace titan

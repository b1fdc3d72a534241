#include "titan/core/threads.h"

#include <omp.h>
#include <cblas.h>

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

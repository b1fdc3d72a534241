#include "titan/ops/cpu/kernel_isa.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "titan/core/error.h"

namespace titan::ops::cpu {
namespace {

bool cpu_runs_x86_64_v4() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

KernelIsa default_kernel_isa() {
  if (const char* env = std::getenv("TITAN_CPU_ISA"); env && *env) {
    const std::string name = env;
    TITAN_CHECK_INPUT(name == "built" || name == "avx512")
        << "TITAN_CPU_ISA=" << name << ": the CPU kernels' instruction set is built (the "
        << "build's target, " << kernel_isa_name(KernelIsa::Built) << ") or avx512";
    const KernelIsa isa = name == "avx512" ? KernelIsa::Avx512 : KernelIsa::Built;
    TITAN_CHECK_INPUT(kernel_isa_available(isa))
        << "TITAN_CPU_ISA=avx512: "
        << (TITAN_AVX512_KERNELS ? "this CPU lacks AVX-512 (F, BW, CD, DQ, VL)"
                                 : "this build has no AVX-512 kernel copies")
        << "; unset it";
    return isa;
  }
  return kernel_isa_available(KernelIsa::Avx512) ? KernelIsa::Avx512 : KernelIsa::Built;
}

std::atomic<KernelIsa>& chosen_isa() {
  static std::atomic<KernelIsa> isa{default_kernel_isa()};
  return isa;
}

}  // namespace

bool kernel_isa_available(KernelIsa isa) {
  return isa == KernelIsa::Built || (TITAN_AVX512_KERNELS && cpu_runs_x86_64_v4());
}

KernelIsa kernel_isa() { return chosen_isa().load(std::memory_order_relaxed); }

void set_kernel_isa(KernelIsa isa) {
  TITAN_CHECK_INPUT(kernel_isa_available(isa))
      << "set_kernel_isa: " << kernel_isa_name(isa) << " kernels cannot run here";
  chosen_isa().store(isa, std::memory_order_relaxed);
}

const char* kernel_isa_name(KernelIsa isa) {
  if (isa == KernelIsa::Avx512) return "avx512";
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#elif defined(__x86_64__)
  return "sse2";
#else
  return "generic";
#endif
}

}  // namespace titan::ops::cpu

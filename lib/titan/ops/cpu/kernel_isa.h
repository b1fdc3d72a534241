// Which instruction set the hand-written CPU kernels run. The library is built for one x86
// target (CMake's TITAN_CPU_ARCH, x86-64-v3: AVX2 + FMA), so that it runs on every node of
// a cluster; the compute-bound kernels (attention's tiles) also carry an AVX-512 copy
// (x86-64-v4, compiled under `#pragma GCC target`), which runs where the CPU has it, so one
// binary built on a login node runs at full width on AVX-512 compute nodes. The
// memory-bound kernels (norms, RoPE, SwiGLU, AdamW, the loss's row pass) stay on the
// build's target: their speed is the memory's. Both copies give the same bits (lane-wise
// arithmetic, sums in fixed lanes; tested where the CPU has both).
#pragma once

// Whether this build carries the AVX-512 copies: GCC on x86-64 with a target below AVX-512
// (built for AVX-512 already, the build's copy is that).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX512F__)
#define TITAN_AVX512_KERNELS 1
#else
#define TITAN_AVX512_KERNELS 0
#endif

namespace titan::ops::cpu {

enum class KernelIsa {
  Built,   // the build's target
  Avx512,  // x86-64-v4: AVX-512 F, BW, CD, DQ, VL
};

// Chosen once per process: AVX-512 where this build has the copies and the CPU runs them,
// else the build's. TITAN_CPU_ISA=built|avx512 overrides (InputError for another value, or
// avx512 where it cannot run).
KernelIsa kernel_isa();
// Whether `isa` can run here (this build has it and so does the CPU).
bool kernel_isa_available(KernelIsa isa);
// Tests and benchmarks: run the kernels on `isa` from now on (InputError where unavailable).
void set_kernel_isa(KernelIsa isa);
// "avx512", or the build's target: "avx2", "sse2", "avx512".
const char* kernel_isa_name(KernelIsa isa = kernel_isa());

}  // namespace titan::ops::cpu

// How an op reaches its backend. Every op has one public entry in titan::ops with the
// same signature on every device; each backend implements it once, in titan::ops::cpu
// (ops/cpu/<op>.cpp) or titan::ops::cuda (ops/cuda/<op>.cu). The public entry picks the
// backend from the device of its first tensor argument:
//
//   inline void rmsnorm_forward(const Tensor& x, ...) {
//     TITAN_DISPATCH_CPU(x, rmsnorm_forward, x, ...);              // CPU kernel only
//   }
//   inline void matmul(const Tensor& a, ...) {
//     TITAN_DISPATCH_CPU_CUDA(a, matmul, a, ...);                   // both backends
//   }
//
// An op without a kernel for a device fails with a message naming both.
//
// What does not depend on the device lives once, in ops/<op>.cpp: the argument checks,
// which both backends call before any work (given their float dtypes, ops/checks.h), so
// that a bad call fails with the same message on every device, and any thin wrapper that
// is the same on every device (linear, clip_grads_with_norm, rope_table).
//
// In counting mode (core/allocator.h: dry runs) an op returns at once, checks and all, with
// a value-initialized result. Otherwise each dispatch first polls pending communication
// (core/comm_poll.h), so that MPI's non-blocking collectives advance between ops.
//
// Each dispatch is also a trace span named after the op (`matmul`, `rmsnorm_forward`, ...)
// when profiling.* records the step (core/trace.h; a flag test otherwise). A CUDA op's
// span covers its launch, not its run on the device: the GPU's own timeline is the
// profiler's (nsys, ncu).
#pragma once

#include "titan/build_config.h"
#include "titan/core/allocator.h"
#include "titan/core/comm_poll.h"
#include "titan/core/error.h"
#include "titan/core/tensor.h"
#include "titan/core/trace.h"

#define TITAN_DISPATCH_CPU(tensor, fn, ...)                                            \
  do {                                                                                 \
    if (::titan::counting_mode()) {                                                    \
      return decltype(::titan::ops::cpu::fn(__VA_ARGS__))();                           \
    }                                                                                  \
    ::titan::poll_communication();                                                     \
    const ::titan::TraceSpan titan_op_span_(#fn);                                      \
    if ((tensor).device().is_cpu()) return ::titan::ops::cpu::fn(__VA_ARGS__);         \
    TITAN_FAIL() << #fn << " has no kernel for " << (tensor).device();                 \
  } while (0)

#if TITAN_HAVE_CUDA
#define TITAN_DISPATCH_CPU_CUDA(tensor, fn, ...)                                       \
  do {                                                                                 \
    if (::titan::counting_mode()) {                                                    \
      return decltype(::titan::ops::cpu::fn(__VA_ARGS__))();                           \
    }                                                                                  \
    ::titan::poll_communication();                                                     \
    const ::titan::TraceSpan titan_op_span_(#fn);                                      \
    if ((tensor).device().is_cpu()) return ::titan::ops::cpu::fn(__VA_ARGS__);         \
    if ((tensor).device().is_cuda()) return ::titan::ops::cuda::fn(__VA_ARGS__);       \
    TITAN_FAIL() << #fn << " has no kernel for " << (tensor).device();                 \
  } while (0)
#else
#define TITAN_DISPATCH_CPU_CUDA(tensor, fn, ...) TITAN_DISPATCH_CPU(tensor, fn, __VA_ARGS__)
#endif

namespace titan::ops {

// Whether an op writes its output (`=`) or adds to it (`+=`). Parameter gradients always
// accumulate; activation gradients overwrite unless they sit on the residual stream.
enum class Accumulate { No, Yes };

}  // namespace titan::ops

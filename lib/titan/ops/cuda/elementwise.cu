// Elementwise arithmetic on the GPU (contract in ops/elementwise.h): one grid-stride kernel
// per operation. Each operand is f32 or bf16, told to the kernel as a flag (a branch that
// every thread takes the same way), so mixed-precision pairs need no extra instances.
// Arithmetic uses the _rn intrinsics so that nvcc cannot contract y + alpha * x into a
// fused multiply-add: the CPU rounds the product and the sum apart, and so does this.
#include <cuda_bf16.h>

#include "titan/ops/cuda/common.cuh"
#include "titan/ops/elementwise.h"

namespace titan::ops::cuda {
namespace {

enum class Op { Fill, Scale, Add, Accumulate, Axpy };

// An operand: its address and whether it holds bf16 (else f32).
struct Operand {
  const void* data = nullptr;
  bool bf16 = false;
};

__device__ __forceinline__ float load(Operand o, int64_t i) {
  return o.bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(o.data)[i])
                : static_cast<const float*>(o.data)[i];
}

template <Op op>
__global__ void elementwise_kernel(float s, Operand a, Operand b, void* y, bool y_bf16,
                                   int64_t n) {
  const Operand y_in{y, y_bf16};
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float r;
    if constexpr (op == Op::Fill) r = s;
    if constexpr (op == Op::Scale) r = __fmul_rn(load(y_in, i), s);
    if constexpr (op == Op::Add) r = __fadd_rn(load(a, i), load(b, i));
    if constexpr (op == Op::Accumulate) r = __fadd_rn(load(y_in, i), load(a, i));
    if constexpr (op == Op::Axpy) r = __fadd_rn(load(y_in, i), __fmul_rn(s, load(a, i)));
    if (y_bf16) {
      static_cast<__nv_bfloat16*>(y)[i] = __float2bfloat16_rn(r);
    } else {
      static_cast<float*>(y)[i] = r;
    }
  }
}

// An input of a binary op, checked.
Operand operand(const Tensor& t, const Tensor& y, const char* op, const char* arg) {
  check_elementwise_input(t, y, kFloatDTypes, op, arg);
  return {t.raw_data(), t.dtype() == DType::BF16};
}

template <Op op>
void launch(Tensor& y, float s, Operand a, Operand b, const char* name) {
  TITAN_CHECK(y.device().is_cuda()) << name << " (cuda): output is on " << y.device();
  const int64_t n = y.numel();
  if (n == 0) return;
  DeviceGuard guard(y.device().index);
  const int threads = 256;
  elementwise_kernel<op><<<grid_for(n, threads), threads, 0, compute_stream()>>>(
      s, a, b, y.raw_mutable_data(), y.dtype() == DType::BF16, n);
  check_launch(name);
}

}  // namespace

void fill(Tensor& y, float value) {
  check_elementwise_output(y, kFloatDTypes, "fill");
  launch<Op::Fill>(y, value, {}, {}, "fill");
}

void scale(Tensor& y, float factor) {
  check_elementwise_output(y, kFloatDTypes, "scale");
  launch<Op::Scale>(y, factor, {}, {}, "scale");
}

void add(const Tensor& a, const Tensor& b, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "add");
  const Operand oa = operand(a, y, "add", "a"), ob = operand(b, y, "add", "b");
  launch<Op::Add>(y, 0.0f, oa, ob, "add");
}

void accumulate(const Tensor& x, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "accumulate");
  const Operand ox = operand(x, y, "accumulate", "x");
  launch<Op::Accumulate>(y, 0.0f, ox, {}, "accumulate");
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  check_elementwise_output(y, kFloatDTypes, "axpy");
  const Operand ox = operand(x, y, "axpy", "x");
  launch<Op::Axpy>(y, alpha, ox, {}, "axpy");
}

}  // namespace titan::ops::cuda

// AdamW on the GPU (contract in ops/adamw.h). One kernel serves both entries: its
// arguments carry a table of up to kAdamWTensorsPerLaunch tensors (four addresses and an
// element count each), every tensor cut into chunks of kChunk elements, and the blocks
// stride over all the chunks of the table. Each element gets the CPU's operations in the
// CPU's order, each rounded on its own (__fmul_rn and friends are never contracted into a
// fused multiply-add), from the same float scalars (adamw_scalars): the CPU's bits.
#include <algorithm>
#include <vector>

#include "titan/ops/adamw.h"
#include "titan/ops/cuda/common.cuh"

namespace titan::ops::cuda {
namespace {

constexpr int64_t kChunk = int64_t(1) << 16;  // elements per block-sized piece of work
constexpr int kThreads = 256;

// Lives in the kernel's argument space (at most 4 KiB): no device allocation per step.
struct TensorTable {
  float* param[kAdamWTensorsPerLaunch];
  const float* grad[kAdamWTensorsPerLaunch];
  float* exp_avg[kAdamWTensorsPerLaunch];
  float* exp_avg_sq[kAdamWTensorsPerLaunch];
  int64_t numel[kAdamWTensorsPerLaunch];
  int64_t first_chunk[kAdamWTensorsPerLaunch + 1];  // prefix sums of each tensor's chunks
  int count;
};
static_assert(sizeof(TensorTable) + sizeof(AdamWScalars) < 4000, "kernel arguments are 4 KiB");

__global__ void adamw_kernel(TensorTable table, AdamWScalars s) {
  const int64_t chunks = table.first_chunk[table.count];
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    int t = 0;
    while (table.first_chunk[t + 1] <= chunk) ++t;
    const int64_t begin = (chunk - table.first_chunk[t]) * kChunk;
    const int64_t end = min(begin + kChunk, table.numel[t]);
    float* p = table.param[t];
    const float* g = table.grad[t];
    float* m = table.exp_avg[t];
    float* v = table.exp_avg_sq[t];
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const float gi = g[i], mi_old = m[i];
      const float pi = __fmul_rn(p[i], s.decay);
      const float diff = __fsub_rn(gi, mi_old);
      const float mi = s.lerp_small_weight
                           ? __fadd_rn(mi_old, __fmul_rn(s.one_minus_beta1, diff))
                           : __fsub_rn(gi, __fmul_rn(diff, s.beta1_from_weight));
      const float vi =
          __fadd_rn(__fmul_rn(v[i], s.beta2), __fmul_rn(__fmul_rn(s.one_minus_beta2, gi), gi));
      const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bias_correction2_sqrt), s.eps);
      p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(s.neg_step_size, mi), denom));
      m[i] = mi;
      v[i] = vi;
    }
  }
}

// After the shared checks: every tensor on one CUDA device.
void check_devices(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                   const Tensor& exp_avg_sq, Device device, const char* op) {
  TITAN_CHECK(device.is_cuda() && param.device() == device && grad.device() == device &&
              exp_avg.device() == device && exp_avg_sq.device() == device)
      << op << " (cuda): tensors must be on one CUDA device, got param on " << param.device()
      << ", grad on " << grad.device() << ", exp_avg on " << exp_avg.device()
      << ", exp_avg_sq on " << exp_avg_sq.device() << " (expected " << device << ")";
}

// The lists, already checked by the caller's shared check, stepped in launches of up to
// kAdamWTensorsPerLaunch tensors.
void step_tensors(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                  std::vector<Tensor>& exp_avgs, std::vector<Tensor>& exp_avg_sqs,
                  const AdamWOptions& options, int64_t step, const char* op) {
  if (params.empty()) return;
  const Device device = params.front().device();
  for (size_t i = 0; i < params.size(); ++i) {
    check_devices(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], device, op);
  }
  const AdamWScalars scalars = adamw_scalars(options, step);
  DeviceGuard guard(device.index);
  size_t next = 0;
  while (next < params.size()) {
    TensorTable table{};
    table.count = 0;
    table.first_chunk[0] = 0;
    for (; next < params.size() && table.count < kAdamWTensorsPerLaunch; ++next) {
      const int64_t n = params[next].numel();
      if (n == 0) continue;
      const int t = table.count++;
      table.param[t] = params[next].mutable_data<float>();
      table.grad[t] = grads[next].data<float>();
      table.exp_avg[t] = exp_avgs[next].mutable_data<float>();
      table.exp_avg_sq[t] = exp_avg_sqs[next].mutable_data<float>();
      table.numel[t] = n;
      table.first_chunk[t + 1] = table.first_chunk[t] + ceil_div(n, kChunk);
    }
    if (table.count == 0) continue;
    const int64_t chunks = table.first_chunk[table.count];
    adamw_kernel<<<grid_for(chunks, 1), kThreads, 0, compute_stream()>>>(table, scalars);
    check_launch("adamw_kernel");
  }
}

}  // namespace

void adamw_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                const AdamWOptions& options, int64_t step) {
  check_adamw_step(param, grad, exp_avg, exp_avg_sq, step);
  // Handles share storage: the kernel writes the caller's tensors.
  std::vector<Tensor> params{param}, exp_avgs{exp_avg}, exp_avg_sqs{exp_avg_sq};
  const std::vector<Tensor> grads{grad};
  step_tensors(params, grads, exp_avgs, exp_avg_sqs, options, step, "adamw_step");
}

void adamw_step_multi_tensor(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             std::vector<Tensor>& exp_avgs, std::vector<Tensor>& exp_avg_sqs,
                             const AdamWOptions& options, int64_t step) {
  check_adamw_step_multi_tensor(params, grads, exp_avgs, exp_avg_sqs, step);
  step_tensors(params, grads, exp_avgs, exp_avg_sqs, options, step, "adamw_step_multi_tensor");
}

}  // namespace titan::ops::cuda

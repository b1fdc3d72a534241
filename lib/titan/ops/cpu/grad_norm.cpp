// Sums of squares on the CPU. A tensor is cut into kBlocks contiguous blocks
// whose bounds depend on its size only; threads take whole blocks, each block is summed
// in double in element order, and the block sums are added in block order. So the sum
// is the same bits on 1 or 64 threads, which same-config-same-bits needs (the norm
// decides the clip factor, which touches every weight).
#include <cmath>

#include "titan/core/threads.h"
#include "titan/ops/grad_norm.h"

namespace titan::ops::cpu {
namespace {

constexpr int64_t kBlocks = 64;             // enough to balance any thread count we run

// Sum of squares of x[begin, end) in double. Four running sums break the chain of
// dependent adds (the loop is latency-bound otherwise) in a fixed pattern.
double block_sum_of_squares(const float* x, int64_t begin, int64_t end) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = begin;
  for (; i + 4 <= end; i += 4) {
    s0 += double(x[i]) * x[i];
    s1 += double(x[i + 1]) * x[i + 1];
    s2 += double(x[i + 2]) * x[i + 2];
    s3 += double(x[i + 3]) * x[i + 3];
  }
  for (; i < end; ++i) s0 += double(x[i]) * x[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

double sum_of_squares(const Tensor& x) {
  check_sum_of_squares(x);
  const int64_t n = x.numel();
  const float* xp = x.data<float>();
  double block_sums[kBlocks];
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t b = 0; b < kBlocks; ++b) {
    block_sums[b] = block_sum_of_squares(xp, b * n / kBlocks, (b + 1) * n / kBlocks);
  }
  double sum = 0;
  for (int64_t b = 0; b < kBlocks; ++b) sum += block_sums[b];
  return sum;
}

std::vector<double> sums_of_squares(const std::vector<Tensor>& xs) {
  std::vector<double> sums;
  sums.reserve(xs.size());
  for (const Tensor& x : xs) sums.push_back(sum_of_squares(x));
  return sums;
}

}  // namespace titan::ops::cpu

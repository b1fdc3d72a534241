// bench_float8_gemm: the Float8 GEMM (ops/float8_gemm.h, cuBLASLt on fp8 tensor cores)
// against the bf16 GEMM (ops::matmul, cuBLASLt) on the linear layers of Llama 3 8B, both
// measured in the same run on the same GPU, with the casts that the fp8 path adds.
//
// Shapes: dim 4096, 32 heads, 8 kv heads, head dim 128, ffn hidden 14,336; M = 8192 tokens
// per GEMM (local batch 1 x seq 8192). Each linear y = x W^T (x [T, in], W [out, in]):
//   wq [4096 -> 4096]   wk, wv [4096 -> 1024]   wo [4096 -> 4096]
//   w1, w3 [4096 -> 14336]   w2 [14336 -> 4096]
// and its three GEMMs, 2 T in out FLOPs each:
//   forward       y  = x W^T    bf16: matmul(x, No, W, Yes)   fp8: a = x    b = W
//   grad_input    dx = dy W     bf16: matmul(dy, No, W, No)   fp8: a = dy   b = W^T
//   grad_weight   dW += dy^T x  bf16: matmul(dy, Yes, x, No)  fp8: a = dy^T b = x^T
// Outputs: y and dx bf16, dW f32 accumulated (beta = 1), as the trainer keeps them.
// cuBLASLt's fp8 kernels take K-major operands only, so the backward GEMMs need transposed
// fp8 copies (float8_quantize_transposed, from the bf16 tensor); the bf16 GEMM reads its
// operands transposed in place.
//
// Recipes (nn/float8.h, torchao's):
//   tensorwise  e4m3 x and W, e5m2 dy, one scale per tensor. A tensor's amax and scale are
//               computed once and reused: x's and W's in forward, dy's in grad_input; so
//               grad_input's W^T and grad_weight's dy^T and x^T are transposed quantizes only.
//   rowwise     e4m3 throughout, power-of-two scales along each GEMM's contraction dim:
//               x, W, dy per row; W^T, dy^T, x^T per column of W, dy, x. Every operand of
//               every GEMM has its own amax, scales and quantize.
// "cast ms" of a GEMM is the casts it needs (amax + scales + quantize or transposed quantize
// of both operands, bf16 in, fp8 out) under that rule; "transp. ms" the transposed
// quantizes among them. Each linear casts its own input, as the model does (wq, wk and wv
// do not share x's cast), and the weight is cast every time (no FSDP precomputed scales).
//
// Timing: cudaEvents on the compute stream around one call, median of --samples after
// --warmup calls. Before each sample two bf16 GEMMs on other buffers keep the GPU busy
// while the host queues the call (so launch and cuBLASLt heuristic costs stay out of the
// figure) and push the operands out of the 50 MB L2, as other work would in training.
// Every GEMM is checked first: 128 sampled outputs against a double-precision product of the
// same bf16 inputs (relative RMS error; bf16 must be under 1e-2, fp8 under 0.15: e4m3 keeps
// 3 mantissa bits, e5m2 2). A side that fails its check or throws (cuBLASLt finding no
// algorithm, say) is reported as failed with the reason; the rest still runs, exit 1.
//
// Inputs: N(0, 1) values rounded to bf16 (Philox), one block of 2^23 + 9 values on the GPU
// that every operand repeats from its own offset (never zeros, which can run faster than
// real data).
//
// Output, per recipe, one row per linear and GEMM: bf16 ms and TFLOP/s, fp8 GEMM ms and
// TFLOP/s, fp8/bf16 (the speed-up of the GEMM alone), cast ms, transp. (ms of the transposed
// quantizes, part of cast ms), "with casts" = bf16 ms / (fp8 ms + cast ms); then one
// transformer layer's forward + backward: the sums over its seven linears.
//
//   usage: bench_float8_gemm [--samples N] [--warmup N]
// (defaults 25 and 3: well under a minute on an H100)
// Without a CUDA device it prints one line saying so and exits 0; likewise on a GPU without
// fp8 tensor cores (compute capability below 8.9).
#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA
#error "bench_float8_gemm needs the CUDA backend (tools/bench/CMakeLists.txt builds it only then)"
#endif

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "titan/core/copy.h"
#include "titan/core/cuda/launch.h"
#include "titan/core/device_select.h"
#include "titan/core/float_formats.h"
#include "titan/core/philox.h"
#include "titan/core/tensor.h"
#include "titan/core/threads.h"
#include "titan/ops/float8.h"
#include "titan/ops/float8_gemm.h"
#include "titan/ops/matmul.h"

using namespace titan;
using ops::Accumulate;
using ops::Float8Axis;
using ops::Transpose;

namespace {

constexpr int64_t kTokens = 8192;  // M: local batch 1 x seq 8192
constexpr int64_t kDim = 4096, kKvDim = 8 * 128, kHidden = 14336;
const Device kGpu = Device::cuda(0);

struct LinearShape {
  const char* name;
  int64_t in, out;
  int per_layer;  // how many of this linear one transformer layer has
};
const LinearShape kLinears[] = {
    {"wq", kDim, kDim, 1},       {"wk/wv", kDim, kKvDim, 2}, {"wo", kDim, kDim, 1},
    {"w1/w3", kDim, kHidden, 2}, {"w2", kHidden, kDim, 1},
};

enum class Gemm { Forward, GradInput, GradWeight };
constexpr Gemm kGemms[] = {Gemm::Forward, Gemm::GradInput, Gemm::GradWeight};
const char* gemm_name(Gemm g) {
  switch (g) {
    case Gemm::Forward: return "forward";
    case Gemm::GradInput: return "grad_input";
    case Gemm::GradWeight: return "grad_weight";
  }
  return "?";
}

enum class Recipe { Tensorwise, Rowwise };
constexpr Recipe kRecipes[] = {Recipe::Tensorwise, Recipe::Rowwise};
const char* recipe_name(Recipe r) { return r == Recipe::Tensorwise ? "tensorwise" : "rowwise"; }
const char* recipe_summary(Recipe r) {
  return r == Recipe::Tensorwise ? "e4m3 x and W, e5m2 dy, one scale per tensor"
                                 : "e4m3, power-of-two scales per row / column";
}

// 2 T in out: the same for the three GEMMs of a linear.
double linear_flops(const LinearShape& shape) {
  return 2.0 * double(kTokens) * double(shape.in) * double(shape.out);
}

// "M x N x K" of the product a GEMM computes.
std::string gemm_dims(const LinearShape& shape, Gemm g) {
  int64_t m = kTokens, n = shape.out, k = shape.in;
  if (g == Gemm::GradInput) { n = shape.in; k = shape.out; }
  if (g == Gemm::GradWeight) { m = shape.out; n = shape.in; k = kTokens; }
  return std::to_string(m) + " x " + std::to_string(n) + " x " + std::to_string(k);
}

// ---- inputs --------------------------------------------------------------------------------

// One block of random bf16 values, on the host (as f32, for the reference) and on the GPU.
// An operand's element e is block[(offset + e) % size]: distinct offsets give the operands
// different contents without generating gigabytes of random numbers.
class RandomBlock {
 public:
  static constexpr int64_t kSize = (int64_t(1) << 23) + 9;  // odd: rows never line up

  RandomBlock() {
    Tensor host = Tensor::empty({kSize}, DType::BF16);
    philox_fill_normal(host, 2024, philox_stream_key("bench_float8_gemm"), 0, 0.0f, 1.0f);
    values_.resize(size_t(kSize));
    const bf16_t* bits = host.data<bf16_t>();
    for (int64_t i = 0; i < kSize; ++i) values_[size_t(i)] = f32_from_bf16(bits[i]);
    device_ = to_device(host, kGpu);
  }

  float at(int64_t offset, int64_t index) const {
    return values_[size_t((offset + index) % kSize)];
  }

  // A bf16 GPU tensor whose element e is at(offset, e).
  Tensor make(const Shape& shape, int64_t offset) const {
    Tensor t = Tensor::empty(shape, DType::BF16, kGpu);
    const int64_t n = t.numel();
    auto* dst = static_cast<char*>(t.raw_mutable_data());
    const auto* src = static_cast<const char*>(device_.raw_data());
    for (int64_t done = 0; done < n;) {
      const int64_t start = (offset + done) % kSize;
      const int64_t count = std::min(kSize - start, n - done);
      CUDA_CHECK(cudaMemcpyAsync(dst + done * 2, src + start * 2, size_t(count) * 2,
                                 cudaMemcpyDeviceToDevice, cuda::compute_stream()));
      done += count;
    }
    return t;
  }

 private:
  std::vector<float> values_;
  Tensor device_;
};

// ---- timing --------------------------------------------------------------------------------

class Timer {
 public:
  Timer(int warmup, int samples, const RandomBlock& random)
      : warmup_(warmup), samples_(samples) {
    spacer_a_ = random.make({kTokens, kDim}, 7);
    spacer_b_ = random.make({kDim, kDim}, 1234567);
    spacer_c_ = Tensor::empty({kTokens, kDim}, DType::BF16, kGpu);
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Median milliseconds of one call of `run`.
  double median_ms(const std::function<void()>& run) {
    const cudaStream_t stream = cuda::compute_stream();
    for (int i = 0; i < warmup_; ++i) run();
    std::vector<double> ms;
    for (int i = 0; i < samples_; ++i) {
      for (int s = 0; s < 2; ++s) {
        ops::matmul(spacer_a_, Transpose::No, spacer_b_, Transpose::Yes, spacer_c_);
      }
      CUDA_CHECK(cudaEventRecord(start_, stream));
      run();
      CUDA_CHECK(cudaEventRecord(stop_, stream));
      CUDA_CHECK(cudaEventSynchronize(stop_));
      CUDA_CHECK(cudaGetLastError());
      float elapsed = 0;
      CUDA_CHECK(cudaEventElapsedTime(&elapsed, start_, stop_));
      ms.push_back(elapsed);
    }
    std::sort(ms.begin(), ms.end());
    const size_t n = ms.size();
    return n % 2 == 1 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  }

 private:
  int warmup_, samples_;
  Tensor spacer_a_, spacer_b_, spacer_c_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// ---- one linear's operands and GEMMs ---------------------------------------------------------

// One fp8 operand: the bf16 tensor it comes from, cast with scales along `axis` of that
// tensor (float8_quantize's convention), into q ([rows, cols], or [cols, rows] transposed).
struct Cast {
  Tensor x;
  Float8Axis axis = Float8Axis::Tensor;
  bool computes_scale = true;  // amax + scales here; false: reuses a scale cast earlier
  bool transposed = false;
  Tensor amax, scale, q;
};

void run_cast(Cast& c, bool power_of_two) {
  if (c.computes_scale) {
    ops::float8_amax(c.x, c.axis, c.amax);
    ops::float8_scales(c.amax, c.q.dtype(), power_of_two, c.scale);
  }
  if (c.transposed) {
    ops::float8_quantize_transposed(c.x, c.scale, c.axis, c.q);
  } else {
    ops::float8_quantize(c.x, c.scale, c.axis, c.q);
  }
}

struct Fp8Gemm {
  Cast a, b;
};

// A scale (and its amax buffer) for `axis` of x.
void make_scale(Cast& c) {
  const int64_t n = ops::float8_scale_count(c.x, c.axis);
  c.amax = Tensor::empty({n}, DType::F32, kGpu);
  c.scale = Tensor::empty({n}, DType::F32, kGpu);
}
Tensor make_fp8(const Tensor& x, bool transposed, DType format) {
  const int64_t rows = x.size(0), cols = x.size(1);
  return Tensor::empty(transposed ? Shape{cols, rows} : Shape{rows, cols}, format, kGpu);
}

// One GEMM of one linear: times in ms, check errors, and why a side failed (empty: it ran).
struct Timing {
  double bf16_ms = 0;
  double fp8_ms[2] = {0, 0}, cast_ms[2] = {0, 0}, transposed_ms[2] = {0, 0};
  double error_bf16 = 0, error_fp8[2] = {0, 0};
  std::string bf16_failure, fp8_failure[2];
};

struct LinearResult {
  LinearShape shape;
  Timing gemm[3];
};

class LinearBench {
 public:
  LinearBench(const LinearShape& shape, int index, const RandomBlock& random)
      : shape_(shape), random_(random) {
    const int64_t base = 1000003 * (3 * index + 1);
    offset_x_ = base % RandomBlock::kSize;
    offset_w_ = (base + 333331) % RandomBlock::kSize;
    offset_dy_ = (base + 666661) % RandomBlock::kSize;
    x_ = random.make({kTokens, shape.in}, offset_x_);
    w_ = random.make({shape.out, shape.in}, offset_w_);
    dy_ = random.make({kTokens, shape.out}, offset_dy_);
    y_ = Tensor::empty({kTokens, shape.out}, DType::BF16, kGpu);
    dx_ = Tensor::empty({kTokens, shape.in}, DType::BF16, kGpu);
    dw_ = Tensor::zeros({shape.out, shape.in}, DType::F32, kGpu);
  }

  Tensor& output(Gemm g) { return g == Gemm::Forward ? y_ : g == Gemm::GradInput ? dx_ : dw_; }

  void bf16(Gemm g) {
    switch (g) {
      case Gemm::Forward: return ops::matmul(x_, Transpose::No, w_, Transpose::Yes, y_);
      case Gemm::GradInput: return ops::matmul(dy_, Transpose::No, w_, Transpose::No, dx_);
      case Gemm::GradWeight:
        return ops::matmul(dy_, Transpose::Yes, x_, Transpose::No, dw_, 1.0f, 1.0f);
    }
  }

  // The fp8 operands of the three GEMMs under `recipe` (the header's rules).
  void prepare(Recipe recipe) {
    recipe_ = recipe;
    const DType e4m3 = DType::F8E4M3;
    const DType dy_format = recipe == Recipe::Tensorwise ? DType::F8E5M2 : DType::F8E4M3;
    auto cast = [&](const Tensor& x, Float8Axis axis, bool computes_scale, bool transposed,
                    DType format) {
      Cast c;
      c.x = x;
      c.axis = axis;
      c.computes_scale = computes_scale;
      c.transposed = transposed;
      if (computes_scale) make_scale(c);
      c.q = make_fp8(x, transposed, format);
      return c;
    };
    if (recipe == Recipe::Tensorwise) {
      const Float8Axis t = Float8Axis::Tensor;
      Fp8Gemm& f = gemms_[0];
      f.a = cast(x_, t, true, false, e4m3);
      f.b = cast(w_, t, true, false, e4m3);
      Fp8Gemm& gi = gemms_[1];
      gi.a = cast(dy_, t, true, false, dy_format);
      gi.b = cast(w_, t, false, true, e4m3);
      gi.b.scale = f.b.scale;  // W's scale from forward
      Fp8Gemm& gw = gemms_[2];
      gw.a = cast(dy_, t, false, true, dy_format);
      gw.a.scale = gi.a.scale;  // dy's from grad_input
      gw.b = cast(x_, t, false, true, e4m3);
      gw.b.scale = f.a.scale;  // x's from forward
    } else {
      gemms_[0] = {cast(x_, Float8Axis::Rows, true, false, e4m3),
                   cast(w_, Float8Axis::Rows, true, false, e4m3)};
      gemms_[1] = {cast(dy_, Float8Axis::Rows, true, false, dy_format),
                   cast(w_, Float8Axis::Columns, true, true, e4m3)};
      gemms_[2] = {cast(dy_, Float8Axis::Columns, true, true, dy_format),
                   cast(x_, Float8Axis::Columns, true, true, e4m3)};
    }
  }

  void casts(Gemm g) {
    Fp8Gemm& f = gemms_[int(g)];
    const bool power_of_two = recipe_ == Recipe::Rowwise;
    run_cast(f.a, power_of_two);
    run_cast(f.b, power_of_two);
  }
  // The transposed quantizes among casts(g), with the scales already in place.
  bool has_transposed(Gemm g) const {
    return gemms_[int(g)].a.transposed || gemms_[int(g)].b.transposed;
  }
  void transposed(Gemm g) {
    for (Cast* c : {&gemms_[int(g)].a, &gemms_[int(g)].b}) {
      if (c->transposed) ops::float8_quantize_transposed(c->x, c->scale, c->axis, c->q);
    }
  }
  void fp8(Gemm g) {
    Fp8Gemm& f = gemms_[int(g)];
    ops::float8_gemm(f.a.q, f.a.scale, f.b.q, f.b.scale, output(g),
                     g == Gemm::GradWeight ? Accumulate::Yes : Accumulate::No);
  }

  // Relative RMS error of 128 sampled elements of g's output (dW zeroed, then one product)
  // against the double-precision product of the bf16 inputs. `run` computes the output.
  double check(Gemm g, const std::function<void()>& run) {
    Tensor& c = output(g);
    if (g == Gemm::GradWeight) c.zero_();
    run();
    const int64_t rows = c.size(0), cols = c.size(1);
    double error2 = 0, reference2 = 0;
    for (int r = 0; r < 8; ++r) {
      const int64_t i = r == 0 ? rows - 1 : (int64_t(r) * 2654435761LL + 17) % rows;
      const Tensor row = to_device(c.narrow(i, 1), Device::cpu());
      for (int s = 0; s < 16; ++s) {
        const int64_t j = s == 0 ? cols - 1 : (int64_t(s) * 40503LL * (r + 1) + 5) % cols;
        const double got = c.dtype() == DType::F32 ? double(row.data<float>()[j])
                                                    : double(f32_from_bf16(row.data<bf16_t>()[j]));
        if (!std::isfinite(got)) return INFINITY;
        const double expected = reference(g, i, j);
        error2 += (got - expected) * (got - expected);
        reference2 += expected * expected;
      }
    }
    return std::sqrt(error2 / std::max(reference2, 1e-300));
  }

 private:
  // Element (i, j) of g's output in double, from the host copy of the inputs.
  double reference(Gemm g, int64_t i, int64_t j) const {
    const int64_t in = shape_.in, out = shape_.out;
    double sum = 0;
    switch (g) {
      case Gemm::Forward:  // y[i, j] = sum_k x[i, k] W[j, k]
        for (int64_t k = 0; k < in; ++k) {
          sum += double(random_.at(offset_x_, i * in + k)) * random_.at(offset_w_, j * in + k);
        }
        break;
      case Gemm::GradInput:  // dx[i, j] = sum_n dy[i, n] W[n, j]
        for (int64_t n = 0; n < out; ++n) {
          sum += double(random_.at(offset_dy_, i * out + n)) * random_.at(offset_w_, n * in + j);
        }
        break;
      case Gemm::GradWeight:  // dW[i, j] = sum_m dy[m, i] x[m, j]
        for (int64_t m = 0; m < kTokens; ++m) {
          sum += double(random_.at(offset_dy_, m * out + i)) * random_.at(offset_x_, m * in + j);
        }
        break;
    }
    return sum;
  }

  LinearShape shape_;
  const RandomBlock& random_;
  int64_t offset_x_ = 0, offset_w_ = 0, offset_dy_ = 0;
  Tensor x_, w_, dy_, y_, dx_, dw_;
  Recipe recipe_ = Recipe::Tensorwise;
  Fp8Gemm gemms_[3];
};

// Runs `body`; a failure (an error thrown, or a check over its limit) is recorded, not
// fatal, so that one run on a lent GPU reports every side that works.
void attempt(std::string& failure, const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& e) {
    failure = e.what();
  }
}

std::string check_failure(double error, double limit) {
  char text[160];
  std::snprintf(text, sizeof(text),
                "check: relative RMS error %.3g of sampled outputs against a double reference "
                "(limit %.3g)", error, limit);
  return text;
}

LinearResult bench_linear(const LinearShape& shape, int index, const RandomBlock& random,
                          Timer& timer) {
  LinearBench bench(shape, index, random);
  LinearResult result{shape, {}};
  constexpr double kBf16Limit = 1e-2, kFp8Limit = 0.15;
  for (Gemm g : kGemms) {
    Timing& t = result.gemm[int(g)];
    attempt(t.bf16_failure, [&] {
      t.error_bf16 = bench.check(g, [&] { bench.bf16(g); });
      if (!(t.error_bf16 < kBf16Limit)) {
        throw std::runtime_error(check_failure(t.error_bf16, kBf16Limit));
      }
      t.bf16_ms = timer.median_ms([&] { bench.bf16(g); });
    });
  }
  for (Recipe recipe : kRecipes) {
    const int r = int(recipe);
    std::string failure;
    attempt(failure, [&] { bench.prepare(recipe); });
    for (Gemm g : kGemms) {
      Timing& t = result.gemm[int(g)];
      if (!failure.empty()) {
        t.fp8_failure[r] = failure;
        continue;
      }
      // In order: grad_input's and grad_weight's tensorwise casts reuse earlier scales.
      attempt(t.fp8_failure[r], [&] {
        t.error_fp8[r] = bench.check(g, [&] {
          bench.casts(g);
          bench.fp8(g);
        });
        if (!(t.error_fp8[r] < kFp8Limit)) {
          throw std::runtime_error(check_failure(t.error_fp8[r], kFp8Limit));
        }
        t.fp8_ms[r] = timer.median_ms([&] { bench.fp8(g); });
        t.cast_ms[r] = timer.median_ms([&] { bench.casts(g); });
        if (bench.has_transposed(g)) {
          t.transposed_ms[r] = timer.median_ms([&] { bench.transposed(g); });
        }
      });
    }
  }
  return result;
}

// ---- report ----------------------------------------------------------------------------------

void print_device() {
  int major = 0, minor = 0, sms = 0, sm_khz = 0, memory_khz = 0, driver = 0, runtime = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, kGpu.index));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, kGpu.index));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, kGpu.index));
  // Peak clocks as the runtime reports them; the current ones need NVML (float8_gemm.sh
  // prints nvidia-smi's).
  if (cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, kGpu.index) != cudaSuccess) sm_khz = 0;
  if (cudaDeviceGetAttribute(&memory_khz, cudaDevAttrMemoryClockRate, kGpu.index) != cudaSuccess) {
    memory_khz = 0;
  }
  cudaGetLastError();
  CUDA_CHECK(cudaDriverGetVersion(&driver));
  CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  const std::string name = device_name(kGpu);
  std::printf("GPU: %s, compute capability %d.%d, %d SMs, peak clocks SM %d MHz, memory %d MHz; "
              "driver %d.%d, runtime %d.%d, cuBLASLt %zu\n",
              name.c_str(), major, minor, sms, sm_khz / 1000, memory_khz / 1000, driver / 1000,
              driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, cublasLtGetVersion());
  if (const double peak = known_bf16_peak_tflops(name); peak > 0) {
    std::printf("datasheet dense peaks: bf16 %.0f TFLOP/s, fp8 %.0f TFLOP/s\n", peak, 2 * peak);
  }
}

// Returns how many GEMMs failed.
int print_recipe(Recipe recipe, const std::vector<LinearResult>& results) {
  const int r = int(recipe);
  std::printf("\n== %s (%s)\n", recipe_name(recipe), recipe_summary(recipe));
  std::printf("%-6s %-11s %-20s %8s %8s %8s %8s %8s %8s %8s %10s\n", "linear", "gemm",
              "M x N x K", "bf16 ms", "TFLOP/s", "fp8 ms", "TFLOP/s", "fp8/bf16", "cast ms",
              "transp.", "with casts");
  double bf16 = 0, fp8 = 0, cast = 0, transposed = 0;
  int failed = 0;
  std::vector<std::string> failures;
  for (const LinearResult& linear : results) {
    const double flops = linear_flops(linear.shape);
    for (Gemm g : kGemms) {
      const Timing& t = linear.gemm[int(g)];
      const std::string dims = gemm_dims(linear.shape, g);
      const bool bf16_ok = t.bf16_failure.empty(), fp8_ok = t.fp8_failure[r].empty();
      if (bf16_ok && fp8_ok) {
        std::printf("%-6s %-11s %-20s %8.3f %8.1f %8.3f %8.1f %7.2fx %8.3f %8.3f %9.2fx\n",
                    linear.shape.name, gemm_name(g), dims.c_str(), t.bf16_ms,
                    flops / t.bf16_ms / 1e9, t.fp8_ms[r], flops / t.fp8_ms[r] / 1e9,
                    t.bf16_ms / t.fp8_ms[r], t.cast_ms[r], t.transposed_ms[r],
                    t.bf16_ms / (t.fp8_ms[r] + t.cast_ms[r]));
        const int n = linear.shape.per_layer;
        bf16 += n * t.bf16_ms;
        fp8 += n * t.fp8_ms[r];
        cast += n * t.cast_ms[r];
        transposed += n * t.transposed_ms[r];
        continue;
      }
      ++failed;
      if (bf16_ok) {
        std::printf("%-6s %-11s %-20s %8.3f %8.1f %8s\n", linear.shape.name, gemm_name(g),
                    dims.c_str(), t.bf16_ms, flops / t.bf16_ms / 1e9, "failed");
      } else {
        std::printf("%-6s %-11s %-20s %8s\n", linear.shape.name, gemm_name(g), dims.c_str(),
                    "failed");
      }
      const std::string& why = bf16_ok ? t.fp8_failure[r] : t.bf16_failure;
      failures.push_back(std::string(linear.shape.name) + " " + gemm_name(g) + " " +
                         (bf16_ok ? recipe_name(recipe) : "bf16") + ": " + why);
    }
  }
  for (const std::string& failure : failures) std::printf("  failed: %s\n", failure.c_str());
  if (failed > 0) {
    std::printf("layer (fwd + bwd): incomplete, %d of %d GEMMs failed\n", failed,
                int(results.size()) * 3);
  } else {
    std::printf("layer (fwd + bwd; wk/wv and w1/w3 twice): bf16 %.3f ms; fp8 GEMMs %.3f ms "
                "(%.2fx); casts %.3f ms (transposed quantizes %.3f ms); bf16 / (fp8 + casts) = "
                "%.2fx\n", bf16, fp8, bf16 / fp8, cast, transposed, bf16 / (fp8 + cast));
  }
  return failed;
}

// The check's error, or "-" where the side failed before its check finished.
std::string error_text(double error, const std::string& failure) {
  if (!failure.empty() && failure.rfind("check:", 0) != 0) return "-";
  char text[32];
  std::snprintf(text, sizeof(text), "%.1e", error);
  return text;
}

void print_checks(const std::vector<LinearResult>& results) {
  std::printf("checks: relative RMS error of 128 sampled outputs against a double reference "
              "(bf16 | tensorwise | rowwise)\n");
  for (const LinearResult& linear : results) {
    std::printf("  %-6s", linear.shape.name);
    for (Gemm g : kGemms) {
      const Timing& t = linear.gemm[int(g)];
      std::printf("  %s %s | %s | %s", gemm_name(g),
                  error_text(t.error_bf16, t.bf16_failure).c_str(),
                  error_text(t.error_fp8[0], t.fp8_failure[0]).c_str(),
                  error_text(t.error_fp8[1], t.fp8_failure[1]).c_str());
    }
    std::printf("\n");
  }
}

int usage() {
  std::fprintf(stderr, "usage: bench_float8_gemm [--samples N] [--warmup N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int samples = 25, warmup = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--samples") == 0 && i + 1 < argc) {
      samples = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) {
      warmup = std::max(0, std::atoi(argv[++i]));
    } else {
      return usage();
    }
  }
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    cudaGetLastError();
    std::printf("bench_float8_gemm: no CUDA device (%s): nothing to time\n",
                status != cudaSuccess ? cudaGetErrorString(status) : "none found");
    return 0;
  }
  try {
    if (!ops::float8_gemm_supported(kGpu)) {
      std::printf("bench_float8_gemm: %s has no fp8 tensor cores (compute capability 8.9+): "
                  "nothing to time\n", device_name(kGpu).c_str());
      return 0;
    }
    const auto started = std::chrono::steady_clock::now();
    configure_threads(1);
    use_device(kGpu);
    print_device();
    std::printf("Llama 3 8B linears, M = %lld tokens per GEMM; median of %d timed calls after %d "
                "warm-up, each after a busy GPU and a cold L2 (cudaEvents)\n",
                static_cast<long long>(kTokens), samples, warmup);
    std::fflush(stdout);
    const RandomBlock random;
    Timer timer(warmup, samples, random);
    std::vector<LinearResult> results;
    for (int i = 0; i < int(std::size(kLinears)); ++i) {
      results.push_back(bench_linear(kLinears[i], i, random, timer));
    }
    print_checks(results);
    int failed = 0;
    for (Recipe recipe : kRecipes) failed += print_recipe(recipe, results);
    std::printf("\nbench_float8_gemm: done in %.1f s%s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                failed > 0 ? ", with failures (exit 1)" : "");
    if (failed > 0) return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_float8_gemm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

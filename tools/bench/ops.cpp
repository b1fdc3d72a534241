// bench_ops: GFLOP/s of the CPU ops that dominate a training step, for the shapes of a
// dim-512 Llama (the CPU step benchmark's model: dim 512, 8 heads, 4 kv heads, ffn 1536,
// vocab 32,000, batch 4 x seq 512), each beside the machine's sgemm rate measured in the
// same run with the same threads. Every op is checked before it is timed.
//
// FLOPs are the useful ones, forward + backward (a multiply-add is 2):
//   linear        6 N K M                        (y = x W^T, dx, dW)
//   attention     6 B Hq T^2 hd  (causal: half of the 12 B Hq T^2 hd of full attention;
//                                  the backward's recompute of the scores is not counted:
//                                  the tiles do 1.31x this, whole 64 x 64 tiles on the
//                                  diagonal and seven products for the useful six)
//   cross-entropy 6 N D V                        (the output projection, its dx and dW;
//                                  the backward's recompute of the logits is not counted;
//                                  "fused" is forward_backward, the training step's call,
//                                  which has no recompute)
// so "vs sgemm" is the fraction of the CPU GEMMs' rate (the library ops/matmul.h chose) the
// op achieves on work that must be done; SwiGLU, elementwise, reports the bytes it moves
// per second instead. A last table runs the linear GEMMs on both CPU GEMM libraries
// (oneDNN, OpenBLAS) in alternating rounds.
//
//   usage: bench_ops [--repeat R] [--only linear|attention|cross-entropy|swiglu|libraries]
//   (the libraries group ends with the bf16 GEMMs, native and widened, where the CPU has
//   AVX512_BF16 or AMX)
//   CE_CHUNKS=1 adds the fused cross-entropy at other logits budgets.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "titan/core/copy.h"
#include "titan/core/philox.h"
#include "titan/core/tensor.h"
#include "titan/core/threads.h"
#include "titan/ops/attention.h"
#include "titan/ops/cast.h"
#include "titan/ops/cpu/kernel_isa.h"
#include "titan/ops/cross_entropy.h"
#include "titan/ops/matmul.h"
#include "titan/ops/swiglu.h"

using namespace titan;

namespace {

constexpr int64_t B = 4, T = 512, D = 512, Hq = 8, Hkv = 4, hd = 64, F = 1536, V = 32000;
constexpr int64_t N = B * T;

Tensor random(const Shape& shape, const char* name, float std) {
  Tensor t = Tensor::empty(shape, DType::F32);
  philox_fill_normal(t, 1234, philox_stream_key(name), 0, 0.0f, std);
  return t;
}

// Best wall time of `repeat` runs after one warm-up run.
double best_seconds(int repeat, const std::function<void()>& run) {
  run();
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "bench_ops: check failed: %s\n", what);
  std::exit(1);
}

double sgemm_rate = 0;

void report(const char* op, const std::string& shape, double flops, double seconds) {
  const double gflops = flops / seconds / 1e9;
  std::printf("%-14s %-34s %9.2f %9.1f %8.2f\n", op, shape.c_str(), seconds * 1e3, gflops,
              gflops / sgemm_rate);
}

void bench_linear(const char* name, int64_t in, int64_t out, int repeat) {
  const Tensor x = random({N, in}, "x", 1.0f), w = random({out, in}, "w", 0.02f);
  const Tensor dy = random({N, out}, "dy", 1.0f);
  Tensor y = Tensor::empty({N, out}, DType::F32), dx = Tensor::empty({N, in}, DType::F32);
  Tensor dw = Tensor::zeros({out, in}, DType::F32);
  ops::linear_forward(x, w, y);
  double expected = 0;  // y[3, 5] in double
  for (int64_t k = 0; k < in; ++k) expected += double(x.data<float>()[3 * in + k]) * w.data<float>()[5 * in + k];
  check(std::fabs(y.data<float>()[3 * out + 5] - expected) < 1e-4 * std::max(1.0, std::fabs(expected)),
        "linear forward element");
  const double s = best_seconds(repeat, [&] {
    ops::linear_forward(x, w, y);
    ops::linear_backward(dy, x, w, dx, dw, ops::Accumulate::No);
  });
  report(name, std::to_string(N) + "x" + std::to_string(in) + " -> " + std::to_string(out),
         6.0 * N * in * out, s);
}

// The linear layer's three GEMMs (y = x W^T, dx, dW +=) on x [N, in], w [out, in] and dy,
// y and dx in x's dtype, dW f32: the tables' unit of work.
std::function<void()> linear_gemms(const Tensor& x, const Tensor& w, const Tensor& dy) {
  Tensor y = Tensor::empty({x.size(0), w.size(0)}, x.dtype());
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  Tensor dw = Tensor::zeros(w.shape(), DType::F32);
  return [x, w, dy, y, dx, dw]() mutable {
    ops::linear_forward(x, w, y);
    ops::linear_backward(dy, x, w, dx, dw, ops::Accumulate::No);
  };
}

// "2048x512->1536": a linear shape in the same-run tables' first column.
std::string linear_shape(int64_t in, int64_t out) {
  return std::to_string(N) + "x" + std::to_string(in) + "->" + std::to_string(out);
}

// The linear layer's three GEMMs on OpenBLAS and on oneDNN, alternating rounds in the same
// run: what each library gives on this CPU (ops/matmul.h picks one per CPU).
void bench_gemm_libraries(int64_t in, int64_t out, int repeat) {
  const auto gemms = linear_gemms(random({N, in}, "x", 1.0f), random({out, in}, "w", 0.02f),
                                  random({N, out}, "dy", 1.0f));
  using ops::cpu::GemmLibrary;
  const GemmLibrary chosen = ops::cpu::gemm_library();
  double best_openblas = 1e30, best_onednn = 1e30;
  for (int round = 0; round < repeat; ++round) {
    ops::cpu::set_gemm_library(GemmLibrary::OpenBlas);
    best_openblas = std::min(best_openblas, best_seconds(1, gemms));
    ops::cpu::set_gemm_library(GemmLibrary::OneDnn);
    best_onednn = std::min(best_onednn, best_seconds(1, gemms));
  }
  ops::cpu::set_gemm_library(chosen);
  const double flops = 6.0 * double(N) * double(in) * double(out);
  std::printf("%-18s %-16s %9.1f %9.1f %8.2f\n", linear_shape(in, out).c_str(),
              "linear fwd+bwd", flops / best_openblas / 1e9, flops / best_onednn / 1e9,
              best_openblas / best_onednn);
}

// The linear layer's three GEMMs on bf16 operands (mixed precision: x, W, dy bf16, dW f32),
// native (oneDNN's bf16 GEMMs) and widened (f32 GEMMs on exact f32 copies), alternating
// rounds beside the f32 GEMMs: which bf16_gemm() mode is faster on this CPU (ops/matmul.h).
void bench_bf16_gemms(int64_t in, int64_t out, int repeat) {
  const Tensor x32 = random({N, in}, "x", 1.0f), w32 = random({out, in}, "w", 0.02f);
  const Tensor dy32 = random({N, out}, "dy", 1.0f);
  const auto bf16 = [](const Tensor& t) {
    Tensor b = Tensor::empty(t.shape(), DType::BF16);
    ops::cast(t, b);
    return b;
  };
  const auto f32_run = linear_gemms(x32, w32, dy32);
  const auto bf16_run = linear_gemms(bf16(x32), bf16(w32), bf16(dy32));
  using ops::cpu::Bf16Gemm;
  const Bf16Gemm chosen = ops::cpu::bf16_gemm();
  double best_f32 = 1e30, best_native = 1e30, best_widened = 1e30;
  for (int round = 0; round < repeat; ++round) {
    best_f32 = std::min(best_f32, best_seconds(1, f32_run));
    ops::cpu::set_bf16_gemm(Bf16Gemm::Native);
    best_native = std::min(best_native, best_seconds(1, bf16_run));
    ops::cpu::set_bf16_gemm(Bf16Gemm::Widened);
    best_widened = std::min(best_widened, best_seconds(1, bf16_run));
  }
  ops::cpu::set_bf16_gemm(chosen);
  const double flops = 6.0 * double(N) * double(in) * double(out);
  std::printf("%-18s %9.1f %9.1f %9.1f %8.2f %8.2f\n", linear_shape(in, out).c_str(),
              flops / best_f32 / 1e9, flops / best_native / 1e9, flops / best_widened / 1e9,
              best_f32 / best_native, best_f32 / best_widened);
}

void bench_attention(int repeat) {
  const int threads = thread_count();
  const Tensor q = random({B, T, Hq, hd}, "q", 1.0f), k = random({B, T, Hkv, hd}, "k", 1.0f);
  const Tensor v = random({B, T, Hkv, hd}, "v", 1.0f), dout = random({B, T, Hq, hd}, "do", 1.0f);
  Tensor out = Tensor::empty(q.shape(), DType::F32), lse = Tensor::empty({B, Hq, T}, DType::F32);
  Tensor dq = Tensor::empty(q.shape(), DType::F32), dk = Tensor::empty(k.shape(), DType::F32);
  Tensor dv = Tensor::empty(v.shape(), DType::F32);
  const int64_t bytes =
      std::max(ops::attention_forward_workspace_bytes(q.device(), B, T, Hq, Hkv, hd, threads),
               ops::attention_backward_workspace_bytes(q.device(), B, T, Hq, Hkv, hd, threads));
  Tensor workspace = Tensor::empty({bytes}, DType::U8);
  const float scale = 1.0f / std::sqrt(float(hd));
  ops::attention_forward(q, k, v, scale, ops::AttentionMask::Causal, out, lse, workspace);
  // The first query sees only the first key: its output is that key's value row.
  for (int64_t d = 0; d < hd; ++d) {
    check(std::fabs(out.data<float>()[d] - v.data<float>()[d]) < 1e-5, "attention row 0 = v row 0");
  }
  // Each instruction set the tile kernels have here (ops/cpu/kernel_isa.h), the chosen last.
  const ops::cpu::KernelIsa chosen = ops::cpu::kernel_isa();
  for (ops::cpu::KernelIsa isa : {ops::cpu::KernelIsa::Built, ops::cpu::KernelIsa::Avx512}) {
    if (isa == chosen || !ops::cpu::kernel_isa_available(isa)) continue;
    ops::cpu::set_kernel_isa(isa);
    const double s = best_seconds(repeat, [&] {
      ops::attention_forward(q, k, v, scale, ops::AttentionMask::Causal, out, lse, workspace);
      ops::attention_backward(dout, q, k, v, out, lse, scale, ops::AttentionMask::Causal, dq, dk,
                              dv, ops::Accumulate::No, workspace);
    });
    report(("attention " + std::string(ops::cpu::kernel_isa_name(isa))).c_str(),
           "B4 T512 Hq8 Hkv4 hd64 causal", 6.0 * B * Hq * T * T * hd, s);
  }
  ops::cpu::set_kernel_isa(chosen);
  const double s = best_seconds(repeat, [&] {
    ops::attention_forward(q, k, v, scale, ops::AttentionMask::Causal, out, lse, workspace);
    ops::attention_backward(dout, q, k, v, out, lse, scale, ops::AttentionMask::Causal, dq, dk, dv,
                            ops::Accumulate::No, workspace);
  });
  report(("attention " + std::string(ops::cpu::kernel_isa_name(chosen))).c_str(),
         "B4 T512 Hq8 Hkv4 hd64 causal", 6.0 * B * Hq * T * T * hd, s);
}

void bench_cross_entropy(int repeat) {
  const Tensor h = random({N, D}, "h", 1.0f), w = random({V, D}, "output", 0.02f);
  Tensor labels = Tensor::empty({N}, DType::I64);
  for (int64_t n = 0; n < N; ++n) labels.mutable_data<int64_t>()[n] = (n * 7919) % V;
  Tensor loss = Tensor::empty({1}, DType::F32), lse = Tensor::empty({N}, DType::F32);
  Tensor dh = Tensor::empty({N, D}, DType::F32), dw = Tensor::zeros({V, D}, DType::F32);
  Tensor workspace = Tensor::empty(ops::cross_entropy_workspace_shape(N, V), DType::F32);
  ops::cross_entropy_forward(h, w, labels, loss, lse, workspace);
  // Logits of std ~0.45 (0.02 * sqrt(512)): the mean loss is near ln V + var / 2.
  const double mean_loss = loss.data<float>()[0] / double(N);
  check(std::fabs(mean_loss - std::log(double(V)) - 0.5 * 0.02 * 0.02 * D) < 0.05, "mean loss near ln V");
  const double s = best_seconds(repeat, [&] {
    ops::cross_entropy_forward(h, w, labels, loss, lse, workspace);
    ops::cross_entropy_backward(h, w, labels, lse, 1.0f / float(N), dh, dw, ops::Accumulate::No,
                                workspace);
  });
  const std::string shape =
      std::to_string(N) + "x" + std::to_string(D) + " vocab " + std::to_string(V);
  report("cross-entropy", shape, 6.0 * N * D * V, s);
  const Tensor apart_dh = to_device(dh, Device::cpu());
  const double fused = best_seconds(repeat, [&] {
    ops::cross_entropy_forward_backward(h, w, labels, 1.0f / float(N), loss, lse, dh, dw,
                                        ops::Accumulate::No, workspace);
  });
  check(std::memcmp(dh.raw_data(), apart_dh.raw_data(), size_t(dh.bytes())) == 0,
        "fused cross-entropy dh = forward then backward's");
  report("  fused", shape, 6.0 * N * D * V, fused);
  if (!std::getenv("CE_CHUNKS")) return;
  // The fused loss at other logits budgets (the chunk of tokens per GEMM): each chunk's
  // dweight GEMM reads and writes all of dweight [V, D], so small chunks cost memory traffic.
  for (int64_t mib : {16, 32, 64, 128, 256}) {
    Tensor chunk_workspace =
        Tensor::empty(ops::cross_entropy_workspace_shape(N, V, mib << 20), DType::F32);
    const double t = best_seconds(repeat, [&] {
      ops::cross_entropy_forward_backward(h, w, labels, 1.0f / float(N), loss, lse, dh, dw,
                                          ops::Accumulate::No, chunk_workspace);
    });
    report("  fused", std::to_string(mib) + " MiB: " + std::to_string(chunk_workspace.size(0)) +
           " tokens per chunk", 6.0 * N * D * V, t);
  }
}

// SwiGLU [N, F] forward + backward: elementwise, so reported as memory moved (fwd reads a
// and b and writes y; bwd reads dy, a and b and writes da and db: 32 bytes per element).
void bench_swiglu(int repeat) {
  const Tensor a = random({N, F}, "a", 1.0f), b = random({N, F}, "b", 1.0f);
  const Tensor dy = random({N, F}, "dy", 1.0f);
  Tensor y = Tensor::empty({N, F}, DType::F32), da = Tensor::empty({N, F}, DType::F32);
  Tensor db = Tensor::empty({N, F}, DType::F32);
  ops::swiglu_forward(a, b, y);
  const float a0 = a.data<float>()[0], b0 = b.data<float>()[0];
  check(std::fabs(y.data<float>()[0] - a0 / (1.0f + std::exp(-a0)) * b0) < 1e-5f, "swiglu y[0]");
  const double s = best_seconds(repeat, [&] {
    ops::swiglu_forward(a, b, y);
    ops::swiglu_backward(dy, a, b, da, db);
  });
  std::printf("%-14s %-34s %9.2f %9.1f GB/s\n", "swiglu", (std::to_string(N) + "x" +
              std::to_string(F)).c_str(), s * 1e3, 32.0 * double(N * F) / s / 1e9);
}


}  // namespace

int main(int argc, char** argv) {
  int repeat = 3;
  std::string only;  // one group: linear, attention, cross-entropy, swiglu, libraries
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
    if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
  }
  auto wanted = [&](const char* group) { return only.empty() || only == group; };
  const int threads = configure_threads(1);
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  sgemm_rate = ops::measure_sgemm_gflops(1024);
  std::printf("threads %d, GEMMs %s, OpenBLAS core %s (OPENBLAS_CORETYPE=%s), sgemm 1024^3: "
              "%.1f GFLOP/s\n",
              threads, ops::cpu::gemm_library_name(), blas_core_name().c_str(),
              coretype ? coretype : "unset", sgemm_rate);
  if (const std::string warning = ops::cpu_gemm_warning(); !warning.empty()) {
    std::printf("warning: %s\n", warning.c_str());
  }
  std::printf("%-14s %-34s %9s %9s %8s\n", "op (fwd+bwd)", "shape", "ms", "GFLOP/s", "vs sgemm");
  if (wanted("linear")) {
    bench_linear("linear wq", D, D, repeat);
    bench_linear("linear w1", D, F, repeat);
    bench_linear("linear w2", F, D, repeat);
  }
  if (wanted("attention")) bench_attention(repeat);
  if (wanted("cross-entropy")) bench_cross_entropy(repeat);
  if (wanted("swiglu")) bench_swiglu(repeat);
  if (!wanted("libraries")) return 0;
#if TITAN_HAVE_DNNL
  std::printf("\nGEMM libraries, same run (GFLOP/s; ratio: OpenBLAS's time / oneDNN's)\n");
  std::printf("%-18s %-16s %9s %9s %8s\n", "shape", "GEMMs", "OpenBLAS", "oneDNN", "ratio");
  bench_gemm_libraries(D, D, repeat);
  bench_gemm_libraries(D, F, repeat);
  bench_gemm_libraries(F, D, repeat);
#endif
  if (!ops::cpu::bf16_gemm_available(ops::cpu::Bf16Gemm::Native)) return 0;
  std::printf("\nbf16 GEMMs, same run (linear fwd+bwd GFLOP/s; ratios: f32 time / bf16 time); "
              "this CPU's choice: %s\n", ops::cpu::bf16_gemm_name());
  std::printf("%-18s %9s %9s %9s %8s %8s\n", "shape", "f32", "native", "widened", "native",
              "widened");
  bench_bf16_gemms(D, D, repeat);
  bench_bf16_gemms(D, F, repeat);
  bench_bf16_gemms(F, D, repeat);
  return 0;
}

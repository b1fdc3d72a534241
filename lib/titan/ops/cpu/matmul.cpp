// GEMM on the CPU, row-major: oneDNN's matmul primitive or OpenBLAS's cblas_sgemm, as
// gemm_library() chose (ops/matmul.h). Both run their own threads (OpenMP, the count set by
// configure_threads), so this is never called from inside an OpenMP region.
//
// oneDNN: one primitive per GEMM shape (sizes, transposes as strides, leading dims, and
// whether C is added to), made on first use and kept; alpha is a run-time output scale and
// beta a sum post-op, so C = alpha op(A) op(B) + beta C as BLAS defines it (beta 0 never
// reads C). oneDNN chooses its kernels by the CPU's ISA at run time.
//
// bf16 A and B (mixed precision): natively on oneDNN (f32 accumulation into an f32 or bf16
// C), or widened to f32 for the f32 GEMM of the chosen library, as bf16_gemm() says.
#include "titan/ops/matmul.h"

#include <cblas.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"

#if TITAN_HAVE_DNNL
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#endif

namespace titan::ops::cpu {
namespace {

#if TITAN_HAVE_DNNL

struct GemmKey {
  int64_t m, n, k, lda, ldb, ldc;
  bool transpose_a, transpose_b;
  float beta;
  DType ab, c;  // A's and B's dtype (f32 or bf16), C's
  auto tie() const {
    return std::tie(m, n, k, lda, ldb, ldc, transpose_a, transpose_b, beta, ab, c);
  }
  bool operator<(const GemmKey& other) const { return tie() < other.tie(); }
};

class DnnlGemms {
 public:
  static DnnlGemms& instance() {
    static DnnlGemms gemms;
    return gemms;
  }

  void run(const GemmKey& key, const void* a, const void* b, void* c, float alpha) {
    using dnnl::memory;
    const dnnl::matmul& primitive = primitive_for(key);
    const memory::desc a_desc = matrix(key.m, key.k, key.lda, key.transpose_a, key.ab);
    const memory::desc b_desc = matrix(key.k, key.n, key.ldb, key.transpose_b, key.ab);
    const memory::desc c_desc = matrix(key.m, key.n, key.ldc, false, key.c);
    memory a_mem(a_desc, engine_, const_cast<void*>(a));
    memory b_mem(b_desc, engine_, const_cast<void*>(b));
    memory c_mem(c_desc, engine_, c);
    memory scale({{1}, memory::data_type::f32, {1}}, engine_, &alpha);
    thread_local dnnl::stream stream(engine_);
    primitive.execute(stream, {{DNNL_ARG_SRC, a_mem},
                               {DNNL_ARG_WEIGHTS, b_mem},
                               {DNNL_ARG_DST, c_mem},
                               {DNNL_ARG_ATTR_OUTPUT_SCALES, scale}});
    stream.wait();
  }

 private:
  DnnlGemms() : engine_(dnnl::engine::kind::cpu, 0) {}

  // A row-major [rows, cols] operand with leading dim ld, or the transpose of a row-major
  // [cols, rows] one.
  static dnnl::memory::desc matrix(int64_t rows, int64_t cols, int64_t ld, bool transposed,
                                   DType dtype) {
    using dnnl::memory;
    return memory::desc({rows, cols},
                        dtype == DType::BF16 ? memory::data_type::bf16 : memory::data_type::f32,
                        transposed ? memory::dims{1, ld} : memory::dims{ld, 1});
  }

  const dnnl::matmul& primitive_for(const GemmKey& key) {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto found = primitives_.find(key);
    if (found != primitives_.end()) return found->second;
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {DNNL_RUNTIME_F32_VAL});
    if (key.beta != 0.0f) {
      dnnl::post_ops sum;
      sum.append_sum(key.beta);
      attr.set_post_ops(sum);
    }
    const dnnl::matmul::desc desc(matrix(key.m, key.k, key.lda, key.transpose_a, key.ab),
                                  matrix(key.k, key.n, key.ldb, key.transpose_b, key.ab),
                                  matrix(key.m, key.n, key.ldc, false, key.c));
    return primitives_.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, engine_)))
        .first->second;
  }

  dnnl::engine engine_;
  std::mutex mutex_;
  std::map<GemmKey, dnnl::matmul> primitives_;  // std::map: references stay valid
};

#endif  // TITAN_HAVE_DNNL

GemmLibrary default_gemm_library() {
  if (const char* env = std::getenv("TITAN_CPU_GEMM"); env && *env) {
    const std::string name = env;
    TITAN_CHECK_INPUT(name == "onednn" || name == "openblas")
        << "TITAN_CPU_GEMM=" << name << ": the CPU GEMM library is onednn or openblas";
    TITAN_CHECK_INPUT(name == "openblas" || TITAN_HAVE_DNNL)
        << "TITAN_CPU_GEMM=onednn: this build has no oneDNN (TITAN_DNNL=OFF, or libdnnl-dev "
        << "missing at configure time); unset it or rebuild with oneDNN";
    return name == "onednn" ? GemmLibrary::OneDnn : GemmLibrary::OpenBlas;
  }
  return TITAN_HAVE_DNNL && cpu_has_avx512() ? GemmLibrary::OneDnn : GemmLibrary::OpenBlas;
}

std::atomic<GemmLibrary>& chosen_library() {
  static std::atomic<GemmLibrary> library{default_gemm_library()};
  return library;
}

}  // namespace

GemmLibrary gemm_library() { return chosen_library().load(std::memory_order_relaxed); }

void set_gemm_library(GemmLibrary library) {
  TITAN_CHECK_INPUT(library == GemmLibrary::OpenBlas || TITAN_HAVE_DNNL)
      << "set_gemm_library: this build has no oneDNN";
  chosen_library().store(library, std::memory_order_relaxed);
}

const char* gemm_library_name(GemmLibrary library) {
  if (library == GemmLibrary::OneDnn) return "oneDNN " TITAN_DNNL_VERSION;
  return "OpenBLAS " TITAN_OPENBLAS_VERSION;
}

namespace {

// Whether oneDNN will run AMX tiles: its effective ISA (the CPU's, less what the kernel does
// not permit or the library does not dispatch by default) contains AVX512_CORE_AMX's bits
// (ISA values are nested bit sets; later ones, AMX-FP16, contain them too).
bool onednn_runs_amx() {
#if TITAN_HAVE_DNNL
  const auto amx = unsigned(dnnl::cpu_isa::avx512_core_amx);
  return (unsigned(dnnl::get_effective_cpu_isa()) & amx) == amx;
#else
  return false;
#endif
}

Bf16Gemm default_bf16_gemm() {
  if (const char* env = std::getenv("TITAN_CPU_BF16_GEMM"); env && *env) {
    const std::string name = env;
    TITAN_CHECK_INPUT(name == "native" || name == "widened")
        << "TITAN_CPU_BF16_GEMM=" << name << ": the CPU's bf16 GEMMs are native or widened";
    const Bf16Gemm mode = name == "native" ? Bf16Gemm::Native : Bf16Gemm::Widened;
    TITAN_CHECK_INPUT(bf16_gemm_available(mode))
        << "TITAN_CPU_BF16_GEMM=native: needs oneDNN in the build and a CPU with AVX512_BF16 "
        << "or AMX; unset it to widen bf16 to f32";
    return mode;
  }
  return bf16_gemm_available(Bf16Gemm::Native) && onednn_runs_amx() ? Bf16Gemm::Native
                                                                     : Bf16Gemm::Widened;
}

std::atomic<Bf16Gemm>& chosen_bf16_gemm() {
  static std::atomic<Bf16Gemm> mode{default_bf16_gemm()};
  return mode;
}

}  // namespace

bool bf16_gemm_available(Bf16Gemm mode) {
  if (mode == Bf16Gemm::Widened) return true;
  static const bool native = TITAN_HAVE_DNNL && (cpu_has_bf16() || cpu_has_amx_bf16());
  return native;
}

Bf16Gemm bf16_gemm() { return chosen_bf16_gemm().load(std::memory_order_relaxed); }

void set_bf16_gemm(Bf16Gemm mode) {
  TITAN_CHECK_INPUT(bf16_gemm_available(mode))
      << "set_bf16_gemm: native bf16 GEMMs need oneDNN and AVX512_BF16 or AMX";
  chosen_bf16_gemm().store(mode, std::memory_order_relaxed);
}

const char* bf16_gemm_name(Bf16Gemm mode) {
  if (mode == Bf16Gemm::Widened) return "widened to f32";
  return onednn_runs_amx() ? "native (oneDNN, AMX)" : "native (oneDNN, AVX512_BF16)";
}

void matmul(const Tensor& a, Transpose transpose_a, const Tensor& b, Transpose transpose_b,
            Tensor& c, float alpha, float beta) {
  const GemmShape s = check_matmul(a, transpose_a, b, transpose_b, c, kFloatDTypes);
  if (s.m == 0 || s.n == 0) return;
  const bool bf16 = a.dtype() == DType::BF16;
  if (s.k == 0) {  // an empty sum: C = beta * C
    visit_storage(c, [&](auto* cp) {
      for (int64_t i = 0; i < s.m * s.n; ++i) {
        store(cp, i, beta == 0.0f ? 0.0f : beta * load(cp, i));
      }
    });
    return;
  }
#if TITAN_HAVE_DNNL
  const bool on_onednn = bf16 ? bf16_gemm() == Bf16Gemm::Native
                              : gemm_library() == GemmLibrary::OneDnn;
  if (on_onednn) {
    const GemmKey key{s.m,
                      s.n,
                      s.k,
                      a.size(1),
                      b.size(1),
                      c.size(1),
                      transpose_a == Transpose::Yes,
                      transpose_b == Transpose::Yes,
                      beta,
                      a.dtype(),
                      c.dtype()};
    DnnlGemms::instance().run(key, a.raw_data(), b.raw_data(), c.raw_mutable_data(), alpha);
    return;
  }
#endif
  if (bf16) {  // widened: bf16 products are exact in f32, so this is the same f32 GEMM
    F32Output c32(c, beta != 0.0f);
    cpu::matmul(*F32Input(a), transpose_a, *F32Input(b), transpose_b, *c32, alpha, beta);
    return c32.store();
  }
  cblas_sgemm(CblasRowMajor, transpose_a == Transpose::Yes ? CblasTrans : CblasNoTrans,
              transpose_b == Transpose::Yes ? CblasTrans : CblasNoTrans, int(s.m), int(s.n),
              int(s.k), alpha, a.data<float>(), int(a.size(1)), b.data<float>(), int(b.size(1)),
              beta, c.mutable_data<float>(), int(c.size(1)));
}

}  // namespace titan::ops::cpu

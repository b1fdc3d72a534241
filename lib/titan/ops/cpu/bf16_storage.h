// bf16 tensors on the CPU (mixed precision, docs/design.md "Numerics"): values are stored in
// bf16 and computed on in f32, the GPU kernels' rule: a bf16 element widens to f32 exactly
// on the way in, every operation is an f32 one, and a result is rounded once to nearest
// even on the way out. Two ways to follow it:
//
//   load()/store() and visit_storage(): kernels templated on the pointer type, for the
//     memory-bound ops of every layer (elementwise, columns, embedding, RMSNorm, RoPE,
//     SwiGLU), where a copy would cost as much as the op; their f32 instance is the f32
//     code it always was.
//   F32Input / F32Output: for the kernels written on f32 only (attention's tiles, the loss
//     on given logits, MoE, float8 casts). An op given bf16 tensors runs that kernel on f32
//     copies: each bf16 input widened, each bf16 output computed in f32 and rounded into
//     place by store(). f32 tensors pass through untouched.
//
// The GEMMs choose for themselves (ops/matmul.h's bf16_gemm()): oneDNN's bf16 kernels, or
// these f32 copies for the f32 GEMM.
#pragma once

#include <initializer_list>

#include "titan/core/float_formats.h"
#include "titan/core/tensor.h"

namespace titan::ops::cpu {

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const bf16_t* p, int64_t i) { return f32_from_bf16(p[i]); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(bf16_t* p, int64_t i, float v) { p[i] = bf16_from_f32(v); }

// fn(p) with p the tensor's elements typed by its storage (f32 or bf16; the op's checks have
// accepted nothing else).
template <class Fn>
void visit_storage(const Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::BF16) return fn(t.data<bf16_t>());
  return fn(t.data<float>());
}
template <class Fn>
void visit_storage(Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::BF16) return fn(t.mutable_data<bf16_t>());
  return fn(t.mutable_data<float>());
}

// Whether any of the (defined) tensors is bf16: the op must stage.
inline bool any_bf16(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t != nullptr && t->defined() && t->dtype() == DType::BF16) return true;
  }
  return false;
}

// An input as f32: the tensor itself, or a widened copy of a bf16 one. An undefined tensor
// stays undefined.
class F32Input {
 public:
  explicit F32Input(const Tensor& t);
  const Tensor& operator*() const { return f32_; }
  const Tensor* get() const { return f32_.defined() ? &f32_ : nullptr; }

 private:
  Tensor f32_;
};

// An output computed in f32: the tensor itself, or for a bf16 one an f32 scratch that
// store() rounds into it. `reads_old` starts the scratch from the tensor's values (an output
// that is added to).
class F32Output {
 public:
  F32Output(Tensor& t, bool reads_old);
  Tensor& operator*() { return f32_; }
  Tensor* get() { return f32_.defined() ? &f32_ : nullptr; }
  void store();  // a no-op for an f32 output

 private:
  Tensor* target_;
  Tensor f32_;
};

}  // namespace titan::ops::cpu

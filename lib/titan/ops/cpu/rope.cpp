// RoPE on the CPU: threads split (batch, position); each rotates the pairs of every head.
// x and y share one storage (f32 or bf16: ops/cpu/bf16_storage.h); y may be x.
#include <type_traits>

#include "titan/core/threads.h"
#include "titan/ops/cpu/bf16_storage.h"
#include "titan/ops/rope.h"

namespace titan::ops::cpu {
namespace {

enum class Direction { Forward, Backward };

void rope_rotate(const Tensor& x, const Tensor& freqs, Tensor& y, Direction direction,
                 const char* op) {
  check_rope(x, freqs, y, kFloatDTypes, op);
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), hd = x.size(3);
  const float sign = direction == Direction::Forward ? 1.0f : -1.0f;
  const float* fp = freqs.data<float>();
  visit_storage(y, [&](auto* yp) {
    const auto* xp = x.data<std::remove_pointer_t<decltype(yp)>>();
#pragma omp parallel for collapse(2) schedule(static) if (worth_threads(B * T * H * hd))
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        const float* cs = fp + t * hd;  // (cos, sin) pairs of position t
        for (int64_t h = 0; h < H; ++h) {
          const int64_t base = ((b * T + t) * H + h) * hd;
          for (int64_t i = 0; i < hd / 2; ++i) {
            const float c = cs[2 * i], s = sign * cs[2 * i + 1];
            const float x0 = load(xp, base + 2 * i), x1 = load(xp, base + 2 * i + 1);
            store(yp, base + 2 * i, x0 * c - x1 * s);
            store(yp, base + 2 * i + 1, x0 * s + x1 * c);
          }
        }
      }
    }
  });
}

}  // namespace

void rope_forward(const Tensor& x, const Tensor& freqs, Tensor& y) {
  rope_rotate(x, freqs, y, Direction::Forward, "rope_forward");
}

void rope_backward(const Tensor& dy, const Tensor& freqs, Tensor& dx) {
  rope_rotate(dy, freqs, dx, Direction::Backward, "rope_backward");
}

}  // namespace titan::ops::cpu

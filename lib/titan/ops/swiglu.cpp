// Device-independent parts of ops/swiglu.h: the argument checks both backends make.
#include "titan/ops/swiglu.h"

#include <initializer_list>
#include <utility>

namespace titan::ops {
namespace {

using NamedTensor = std::pair<const Tensor*, const char*>;

void check_like_a(const Tensor& a, std::initializer_list<NamedTensor> others,
                  FloatDTypes accepted, const char* op) {
  check_float_dtype(a, accepted, op, "a");
  for (const auto& [t, name] : others) {
    check_shape(*t, a.shape(), op, name);
    check_dtype(*t, a.dtype(), op, name);
  }
}

}  // namespace

void check_swiglu_forward(const Tensor& a, const Tensor& b, const Tensor& y,
                          FloatDTypes accepted) {
  check_like_a(a, {{&b, "b"}, {&y, "y"}}, accepted, "swiglu_forward");
}

void check_swiglu_backward(const Tensor& dy, const Tensor& a, const Tensor& b, const Tensor& da,
                           const Tensor& db, FloatDTypes accepted) {
  check_like_a(a, {{&b, "b"}, {&dy, "dy"}, {&da, "da"}, {&db, "db"}}, accepted,
               "swiglu_backward");
}

}  // namespace titan::ops

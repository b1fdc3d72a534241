// Cast on the CPU: decode each element to f32 (exact for every format), encode it to the
// destination format (the one rounding). One template instance per (source, destination)
// pair keeps the inner loop free of dtype branches. Threads split elements.
#include <cstring>

#include "titan/core/float_formats.h"
#include "titan/core/threads.h"
#include "titan/ops/cast.h"

namespace titan::ops::cpu {
namespace {

// How one storage type reads as f32 and is written from f32.
template <class T> struct Format;
template <> struct Format<float> {
  static float decode(float x) { return x; }
  static float encode(float x) { return x; }
};
template <> struct Format<bf16_t> {
  static float decode(bf16_t x) { return f32_from_bf16(x); }
  static bf16_t encode(float x) { return bf16_from_f32(x); }
};
template <> struct Format<f16_t> {
  static float decode(f16_t x) { return f32_from_f16(x); }
  static f16_t encode(float x) { return f16_from_f32(x); }
};
template <> struct Format<f8e4m3_t> {
  static float decode(f8e4m3_t x) { return f32_from_f8e4m3(x); }
  static f8e4m3_t encode(float x) { return f8e4m3_from_f32(x); }
};
template <> struct Format<f8e5m2_t> {
  static float decode(f8e5m2_t x) { return f32_from_f8e5m2(x); }
  static f8e5m2_t encode(float x) { return f8e5m2_from_f32(x); }
};

template <class Source, class Destination>
void convert(const Tensor& src, Tensor& dst) {
  const Source* in = src.data<Source>();
  Destination* out = dst.mutable_data<Destination>();
  const int64_t n = src.numel();
#pragma omp parallel for schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) {
    out[i] = Format<Destination>::encode(Format<Source>::decode(in[i]));
  }
}

// The second half of the dispatch: the source type is known, pick the destination's.
template <class Source>
void convert_to(const Tensor& src, Tensor& dst) {
  switch (dst.dtype()) {
    case DType::F32: return convert<Source, float>(src, dst);
    case DType::BF16: return convert<Source, bf16_t>(src, dst);
    case DType::F16: return convert<Source, f16_t>(src, dst);
    case DType::F8E4M3: return convert<Source, f8e4m3_t>(src, dst);
    case DType::F8E5M2: return convert<Source, f8e5m2_t>(src, dst);
    default: TITAN_FAIL() << "cast: dst is " << dtype_name(dst.dtype()) << ", not a float dtype";
  }
}

}  // namespace

void cast(const Tensor& src, Tensor& dst) {
  check_cast(src, dst);
  if (src.numel() == 0) return;
  if (src.dtype() == dst.dtype()) {  // a copy keeps NaN payloads and every other bit
    if (dst.raw_mutable_data() != src.raw_data()) {
      std::memmove(dst.raw_mutable_data(), src.raw_data(), size_t(src.bytes()));
    }
    return;
  }
  switch (src.dtype()) {
    case DType::F32: return convert_to<float>(src, dst);
    case DType::BF16: return convert_to<bf16_t>(src, dst);
    case DType::F16: return convert_to<f16_t>(src, dst);
    case DType::F8E4M3: return convert_to<f8e4m3_t>(src, dst);
    case DType::F8E5M2: return convert_to<f8e5m2_t>(src, dst);
    default: break;  // rejected above
  }
}

}  // namespace titan::ops::cpu

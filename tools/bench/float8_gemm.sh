#!/usr/bin/env bash
# The Float8 GEMM benchmark: cuBLASLt's fp8 GEMM (tensorwise and rowwise scales, with the
# casts it needs) against the bf16 GEMM, both through the library, on Llama 3 8B's linear
# shapes with 8192 tokens, in one run on one GPU (tools/bench/float8_gemm.cpp says what it
# prints; docs/performance.md, "Float8 GEMMs"). Builds nothing: it runs the binary of a
# CUDA build, or of the GPU-check bundle, which tools/device/run_gpu_checks.sh bench does.
#
#   tools/bench/float8_gemm.sh [bench_float8_gemm options, e.g. --samples 50]
#   TITAN_BUILD_DIR=build-gpu/bundle tools/bench/float8_gemm.sh
#
# Environment: TITAN_BUILD_DIR (default build): a build tree (tools/bench/bench_float8_gemm)
# or a bundle (bin/bench_float8_gemm). Takes under a minute on an H100; without a GPU the
# binary prints one line saying so and exits 0.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${TITAN_BUILD_DIR:-build}
[[ $build = /* ]] || build=$root/$build
exe=$build/tools/bench/bench_float8_gemm
[ -x "$exe" ] || exe=$build/bin/bench_float8_gemm
if [ ! -x "$exe" ]; then
  echo "float8_gemm: no bench_float8_gemm in $build: build it first (ninja -C $build bench_float8_gemm; CUDA builds only)" >&2
  exit 2
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  # Current clocks, power and temperature before the run (the binary prints the peak clocks).
  echo "nvidia-smi: $(timeout 20 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu,pstate --format=csv,noheader 2>/dev/null | head -n 1 || echo unavailable)"
fi
exec "$exe" "$@"

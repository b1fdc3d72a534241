#!/usr/bin/env bash
# The mixture-of-experts expert GEMMs: titan.cpp's grouped GEMM path (nn::Moe's routed
# experts) against the plain loop over experts (torchtitan's for-loop path) and against the
# dense SwiGLU FFN of the same active FLOPs, forward + backward, on the debug model's MoE
# layer and a 16B-like slice, in one run on this machine (tools/bench/moe_experts.cpp says
# what it checks and prints; docs/performance.md, "Mixture-of-experts expert GEMMs").
#
#   tools/bench/moe_experts.sh                  all cores, best of 3 rounds
#   tools/bench/moe_experts.sh --repeat 5 --large-tokens 512
#
# Environment: TITAN_BUILD_DIR (build), THREADS (unset: all cores, as the trainer uses
# them). Build first: ninja -C build bench_moe_experts. Takes about a minute on the 2-core
# machine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${TITAN_BUILD_DIR:-build}
[[ $build = /* ]] || build=$root/$build
exe=$build/tools/bench/bench_moe_experts
if [ ! -x "$exe" ]; then
  echo "moe_experts: no $exe: build it first (ninja -C $build bench_moe_experts)" >&2
  exit 2
fi

# Debian 12's OpenBLAS runs generic kernels on AVX-512 CPUs it does not know (docs/design.md,
# "Threads and BLAS"); it reads this when it loads, so it is set here.
coretype_note="unset"
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  coretype_note="$OPENBLAS_CORETYPE (from the environment)"
elif grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
  coretype_note="SKYLAKEX (set here: AVX-512 CPU)"
fi
if [ -n "${THREADS:-}" ]; then
  export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
fi

model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
echo "== MoE expert GEMMs: grouped vs loop over experts vs dense FFN (forward + backward)"
echo "machine:   ${model:-unknown}, $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "threads:   ${THREADS:-all cores}; OPENBLAS_CORETYPE $coretype_note"
load_before=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load_before" 'BEGIN { exit !(l > 1.0) }'; then
  echo "warning:   load average $load_before before starting: another job shares the cores and" \
       "the figures will be low and noisy"
fi
"$exe" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# Runs the bundled GPU checks on the GPU machine (made here by build_gpu_checks.sh and
# carried as build-gpu/bundle) and writes logs and results to OUT_DIR. Finishes within
# 5 minutes: every step has its own timeout. Without a GPU (no nvidia-smi) it says so,
# runs what it can (the CUDA tests then skip, saying why) and does not fail for that.
#
#   tools/device/run_gpu_checks.sh MODE OUT_DIR
#   MODE: tests   cuda_tests: each CUDA op against the CPU op, NCCL, allocator, whole model
#         bench   tools/bench/gpu_step.sh: titan-train vs PyTorch eager/compiled, GEMM rate
#
# OUT_DIR gets at most a handful of files (the device tool brings back 8):
#   environment.txt   nvidia-smi, driver, the libraries the binaries resolve
#   cuda_tests.log    the test output;  cuda_tests.xml  GoogleTest's XML report
#   summary.txt       what ran, what passed, failed and skipped (also printed)
# Exit code: 0 when nothing failed, 1 when a test failed or timed out, 2 on bad usage or a
# missing bundle. Environment: TITAN_GPU_BUNDLE (default build-gpu/bundle).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
usage() { echo "usage: $0 tests|bench OUT_DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
mode=$1
out=$2
case $mode in tests|bench) ;; *) echo "run_gpu_checks: unknown mode '$mode' (modes: tests, bench)" >&2; exit 2 ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
bundle=${TITAN_GPU_BUNDLE:-$root/build-gpu/bundle}
[[ $bundle = /* ]] || bundle=$root/$bundle
summary=$out/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
started=$SECONDS

if [ ! -d "$bundle/bin" ]; then
  note "run_gpu_checks: no bundle at $bundle; build it here first with tools/device/build_gpu_checks.sh and carry build-gpu/bundle"
  exit 2
fi

# --- environment ---------------------------------------------------------------------
# nvidia.nccl is a namespace package (no __file__): its folder is __path__[0].
nccl_lib=$(timeout 20 python3 -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0] + "/lib")' 2>/dev/null || true)
if [ -z "$nccl_lib" ] || [ ! -e "$nccl_lib/libnccl.so.2" ]; then  # any other copy (cuda_tests needs one to load)
  nccl_so=$(timeout 30 find /usr /opt /root -name libnccl.so.2 2>/dev/null | head -n 1 || true)
  nccl_lib=${nccl_so:+$(dirname "$nccl_so")}
fi
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64${nccl_lib:+:$nccl_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The bundled OpenBLAS is Debian 12's, which may not know the host's AVX-512 CPU.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

gpu=1
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  mode: $mode"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')  cores: $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
  echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-}  OMP_NUM_THREADS=$OMP_NUM_THREADS"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi || echo "nvidia-smi failed (exit $?)"
  else
    echo "nvidia-smi: not found"
  fi
  for exe in "$bundle"/bin/*; do
    echo "--- ldd $(basename "$exe")"
    ldd "$exe" || true
  done
} >"$out/environment.txt" 2>&1
if ! command -v nvidia-smi >/dev/null 2>&1; then
  gpu=0
  note "run_gpu_checks: no GPU here (nvidia-smi not found): running what can run; CUDA tests will skip"
else
  note "run_gpu_checks: GPU: $(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || echo unknown)"
fi
missing=$(grep 'not found' "$out/environment.txt" | grep -v '^nvidia-smi' | sort -u || true)
if [ -n "$missing" ]; then
  note "run_gpu_checks: libraries not found:"
  note "$missing"
fi

# --- tests ---------------------------------------------------------------------------
status=0
run_tests() {  # name, timeout_s
  local name=$1 limit=$2 exe=$bundle/bin/$1 rc=0
  if [ ! -x "$exe" ]; then
    note "$name: not in the bundle"
    status=1
    return
  fi
  # A quick first run catches a binary that cannot start (libraries, glibc, architecture)
  # within seconds instead of at the end of the full timeout.
  timeout -k 5 60 "$exe" --gtest_filter='CudaCopy*:CudaMatmulInput*:*_5x3x0_*' >"$out/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    note "$name: smoke run failed (exit $rc); last lines:"
    tail -n 20 "$out/$name.log" | tee -a "$summary"
    status=1
    return
  fi
  local t0=$SECONDS
  # Only the cuda room's suites: cuda_tests also holds the ops room's CPU tests (the
  # harnesses its op-case table uses); test/CMakeLists.txt's TITAN_CUDA_ROOM_FILTER.
  timeout -k 10 "$limit" "$exe" --gtest_filter='Cuda*:*/Cuda*:Nccl*:*/Nccl*' \
    --gtest_output="xml:$out/$name.xml" >"$out/$name.log" 2>&1 || rc=$?
  local elapsed=$((SECONDS - t0))
  local passed skipped failed
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out/$name.log" | tail -n 1)
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$out/$name.log" | tail -n 1)
  failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out/$name.log" | tail -n 1)
  note "$name: exit $rc in ${elapsed} s: passed ${passed:-0}, skipped ${skipped:-0}, failed ${failed:-0}"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    note "$name: timed out after $limit s"
  fi
  if [ "${skipped:-0}" != 0 ]; then
    # The reason of the first skip, e.g. "no CUDA device: ...".
    note "$name: first skip: $(grep -A1 ': Skipped$' "$out/$name.log" | sed -n 2p)"
  fi
  if [ "$rc" -ne 0 ]; then
    status=1
    grep '^\[  FAILED  \] [A-Za-z]' "$out/$name.log" | sort -u | head -n 40 | tee -a "$summary" || true
  fi
}

case $mode in
  tests) run_tests cuda_tests 200 ;;
  bench)
    if [ "$gpu" = 1 ]; then
      TITAN_GPU_BUNDLE=$bundle timeout -k 10 280 bash "$root/tools/bench/gpu_step.sh" "$out" \
        >/dev/null 2>&1 || status=1
      tail -n 12 "$out/gpu_step.md" 2>/dev/null | tee -a "$summary"
    else
      note "bench: needs a GPU; skipped"
    fi
    ;;
esac

note "run_gpu_checks: $mode done in $((SECONDS - started)) s, exit $status$([ "$gpu" = 1 ] || echo ' (no GPU: CUDA tests skipped)')"
exit "$status"

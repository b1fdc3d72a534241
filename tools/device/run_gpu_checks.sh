#!/usr/bin/env bash
# Runs the bundled GPU checks on the GPU machine (made here by build_gpu_checks.sh and
# carried as build-gpu/bundle) and writes logs and results to OUT_DIR. Finishes within
# 7 minutes: every step has its own timeout (tests: groups start until 300 s, each within
# 90 s). Without a GPU (no nvidia-smi) it says so,
# runs what it can (the CUDA tests then skip, saying why) and does not fail for that.
#
#   tools/device/run_gpu_checks.sh MODE OUT_DIR
#   MODE: tests   cuda_tests: each CUDA op against the CPU op, NCCL, allocator, whole model
#         bench   tools/bench/float8_gemm.sh: fp8 GEMMs vs bf16 on Llama 3 8B's linears (when
#                 the bundle has bench_float8_gemm), then tools/bench/gpu_step.sh: titan-train
#                 vs PyTorch eager/compiled, GEMM rate
#
# OUT_DIR gets at most a handful of files (the device tool brings back 8):
#   environment.txt   nvidia-smi, driver, the libraries the binaries resolve
#   cuda_tests.log    the test output, group after group (a group is a suite, or one op of
#                     the op-case table, run in its own process)
#   summary.txt       what ran, what passed, failed and skipped (also printed)
#   float8_gemm.txt   (bench) bench_float8_gemm's output; gpu_step.md, gpu_step.log (bench)
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
# PyTorch's bundled CUDA libraries (the nvidia.* wheels) come after the toolkit's, for a
# library /usr/local/cuda/lib64 lacks (cuBLASLt or the runtime of another minor version).
wheel_libs=$(timeout 20 python3 -c '
import importlib
for name in ("cublas", "cuda_runtime", "cuda_nvrtc"):
    try:
        module = importlib.import_module("nvidia." + name)
        print(list(module.__path__)[0] + "/lib")
    except Exception:
        pass' 2>/dev/null | paste -sd: || true)
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64${nccl_lib:+:$nccl_lib}${wheel_libs:+:$wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
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
  # One process per group (a test suite; the op-case table per op), so that a kernel that
  # faults (a sticky CUDA error poisons the whole process) costs its group only. Groups run
  # until `limit` seconds are used; the rest are listed as not run. Only the suites of the
  # cuda/ and nccl/ test folders: cuda_tests also holds the ops room's CPU tests (the
  # harnesses its op-case table uses); test/CMakeLists.txt's TITAN_CUDA_TESTS_FILTER.
  local room='Cuda*:*/Cuda*:Nccl*:*/Nccl*' t0=$SECONDS groups=() listing
  listing=$("$exe" --gtest_list_tests --gtest_filter="$room")
  local suite op
  local ops other negative
  for suite in $(grep -E '^[^ ].*\.$' <<<"$listing" | sed 's/\.$//'); do
    if [ "$suite" = Rows/CudaOpCase ]; then
      ops=$(awk '/^Rows\/CudaOpCase\./ {on = 1; next} /^[^ ]/ {on = 0} on {print $1}' <<<"$listing" |
            sed -n 's|^[A-Za-z]*/\([a-z_]*[a-z]\)_[0-9].*|\1|p' | sort -u)
      for op in $ops; do
        # GoogleTest filters have only * and ?: leave out the ops whose names extend this
        # one's (cross_entropy_logits_* when running cross_entropy_*).
        negative=""
        for other in $ops; do
          [[ $other == "${op}_"* ]] && negative+="${negative:+:}Rows/CudaOpCase.*/${other}_*"
        done
        groups+=("Rows/CudaOpCase.*/${op}_*${negative:+-$negative}")
      done
    elif [[ $suite == *Input ]]; then
      # The input checks need no GPU and take milliseconds: one process for all of them
      # (each process pays the CUDA libraries' loading), so the budget goes to the GPU work.
      [[ " ${groups[*]} " == *" Cuda*Input.*:Nccl*Input.* "* ]] || groups+=("Cuda*Input.*:Nccl*Input.*")
    else
      groups+=("$suite.*")
    fi
  done
  : >"$out/$name.log"
  local group rc total_passed=0 total_skipped=0 total_failed=0 not_run=() log=$out/group.log
  local passed skipped failed
  for group in "${groups[@]}"; do
    if [ $((SECONDS - t0)) -ge "$limit" ]; then
      not_run+=("$group")
      continue
    fi
    rc=0
    timeout -k 5 90 "$exe" --gtest_filter="$group" >"$log" 2>&1 || rc=$?
    { echo "===== $group (exit $rc)"; cat "$log"; } >>"$out/$name.log"
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    total_passed=$((total_passed + ${passed:-0}))
    total_skipped=$((total_skipped + ${skipped:-0}))
    total_failed=$((total_failed + ${failed:-0}))
    if [ "$rc" -ne 0 ]; then
      status=1
      if [ "$rc" -eq 1 ] && [ -n "$failed" ]; then
        note "$group: ${failed} failed: $(grep '^\[  FAILED  \] [A-Za-z]' "$log" | sed 's/^\[  FAILED  \] //; s/ (.*//' | sort -u | head -n 8 | tr '\n' ' ')"
      else  # a crash or a timeout: no summary line; the last lines say where
        note "$group: exit $rc ($([ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "timed out after 90 s" || echo crashed)); last lines:"
        tail -n 6 "$log" | sed 's/^/    /' | tee -a "$summary"
      fi
    fi
  done
  rm -f "$log"
  note "$name: ${#groups[@]} groups in $((SECONDS - t0)) s: passed $total_passed, skipped $total_skipped, failed $total_failed"
  if [ "${#not_run[@]}" -gt 0 ]; then
    status=1
    note "$name: not run (over $limit s): ${not_run[*]}"
  fi
  if [ "$total_skipped" != 0 ]; then
    # The reason of the first skip, e.g. "no CUDA device: ...".
    note "$name: first skip: $(grep -A1 ': Skipped$' "$out/$name.log" | sed -n 2p)"
  fi
}

case $mode in
  tests) run_tests cuda_tests 300 ;;
  bench)
    if [ "$gpu" = 1 ]; then
      # The Float8 GEMMs first (under a minute on an H100), then the training step in what
      # is left of the bench's 280 s. build_gpu_checks.sh bundles bench_float8_gemm unless
      # TITAN_GPU_TARGETS leaves it out.
      bench_started=$SECONDS
      if [ -x "$bundle/bin/bench_float8_gemm" ]; then
        rc=0
        TITAN_BUILD_DIR=$bundle timeout -k 5 90 bash "$root/tools/bench/float8_gemm.sh" \
          >"$out/float8_gemm.txt" 2>&1 || rc=$?
        if [ "$rc" -eq 0 ]; then
          sed -n '/^== /,$p' "$out/float8_gemm.txt" | tee -a "$summary"
        else
          status=1
          note "bench_float8_gemm: exit $rc$([ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo ' (timed out after 90 s)'); last lines:"
          tail -n 8 "$out/float8_gemm.txt" | sed 's/^/    /' | tee -a "$summary"
        fi
      else
        note "bench_float8_gemm: not in the bundle (skipped); tools/device/build_gpu_checks.sh bundles it by default"
      fi
      step_limit=$((280 - (SECONDS - bench_started)))
      [ "$step_limit" -ge 60 ] || step_limit=60
      TITAN_GPU_BUNDLE=$bundle timeout -k 10 "$step_limit" bash "$root/tools/bench/gpu_step.sh" "$out" \
        >/dev/null 2>&1 || status=1
      tail -n 12 "$out/gpu_step.md" 2>/dev/null | tee -a "$summary"
    else
      note "bench: needs a GPU; skipped"
    fi
    ;;
esac

note "run_gpu_checks: $mode done in $((SECONDS - started)) s, exit $status$([ "$gpu" = 1 ] || echo ' (no GPU: CUDA tests skipped)')"
exit "$status"

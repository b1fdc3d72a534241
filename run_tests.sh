#!/usr/bin/env bash
# Set up (tools/setup.sh: packages, configure, build), then run the whole test suite with
# CTest. The exit code is CTest's. Arguments go to ctest, e.g.
#   ./run_tests.sh -R Matmul          only tests whose name matches
#   ./run_tests.sh -L distributed         only a label
# Environment: TITAN_BUILD_DIR (default build), TITAN_TEST_JOBS (CTest's -j, default 1),
# TITAN_SKIP_SETUP=1 (build folder already up to date), TITAN_SKIP_ASSETS=1 (do not run
# tools/fetch_assets.sh; the tokenizer parity tests then fail if assets/ is empty), and
# setup.sh's own variables.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ "${TITAN_SKIP_SETUP:-0}" != 1 ]; then
  tools/setup.sh
fi
build_dir=${TITAN_BUILD_DIR:-build}
# The tokenizers, the SOTU corpus and its shards (assets/, fetched once; ~1 s when present).
if [ "${TITAN_SKIP_ASSETS:-0}" != 1 ]; then
  TITAN_BUILD_DIR=$build_dir tools/fetch_assets.sh
fi

# Open MPI refuses to start as root unless told; containers and CI run as root.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Debian 12's OpenBLAS runs generic kernels on AVX-512 CPUs it does not know (docs/design.md,
# "Threads and BLAS"); same results, several times faster.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
  echo "run_tests: OPENBLAS_CORETYPE=SKYLAKEX (AVX-512 CPU)"
fi

# Serial by default: every test process runs 2 OpenMP threads (test/CMakeLists.txt) and MPI
# tests start several ranks, so parallel CTest jobs would oversubscribe a 2-core machine.
jobs=${TITAN_TEST_JOBS:-1}
echo "run_tests: ctest --test-dir $build_dir --output-on-failure -j$jobs $*"
started=$SECONDS
status=0
ctest --test-dir "$build_dir" --output-on-failure -j"$jobs" "$@" || status=$?
echo "run_tests: ctest exit $status after $((SECONDS - started)) s"
exit "$status"

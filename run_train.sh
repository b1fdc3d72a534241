#!/usr/bin/env bash
# Set up (tools/setup.sh), then train. torchtitan's convention:
#   ./run_train.sh                                       the default config
#   CONFIG_FILE=configs/llama3_8b.yaml ./run_train.sh    another config
#   ./run_train.sh --training.steps 20                   any key overridden on the command line
#   NGPU=4 ./run_train.sh                                4 ranks under mpirun (NPROC works too;
#                                                        refused until data parallelism lands)
# Environment: CONFIG_FILE, NGPU or NPROC (ranks, default 1), TITAN_BUILD_DIR (default
# build), TITAN_SKIP_SETUP=1 (skip setup), TITAN_SKIP_ASSETS=1 (skip tools/fetch_assets.sh),
# MPIRUN_ARGS (extra mpirun arguments, once ranks > 1 are allowed).
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
config=${CONFIG_FILE:-configs/llama3_debug.yaml}
ranks=${NPROC:-${NGPU:-1}}
exe=$build_dir/apps/titan-train

# Debian 12's OpenBLAS runs generic kernels on AVX-512 CPUs it does not know; OpenBLAS
# reads this when it loads, so it is set here, never by the program (DESIGN.md).
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
  echo "run_train: OPENBLAS_CORETYPE=SKYLAKEX (AVX-512 CPU; set OPENBLAS_CORETYPE to override)"
fi

# Until data parallelism lands (the MPI issue), N processes would be N independent runs;
# then this becomes `mpirun -np "$ranks" $MPIRUN_ARGS "$exe" ...`.
if [ "$ranks" -gt 1 ]; then
  echo "run_train: NGPU/NPROC=$ranks needs data parallelism, which is not built yet; use 1" >&2
  exit 2
fi
set -x
exec "$exe" --config "$config" "$@"

#!/usr/bin/env bash
# Set up (tools/setup.sh), then train. torchtitan's convention:
#   ./run_train.sh                                       the default config
#   CONFIG_FILE=configs/llama3_8b.yaml ./run_train.sh    another config
#   ./run_train.sh --training.steps 20                   any key overridden on the command line
#   NGPU=4 ./run_train.sh                                4 ranks under mpirun (NPROC works too)
#   NGPU=1 ./run_train.sh                                one process, no mpirun
# By default the job runs on 2 ranks (mpirun -np 2) with the model sharded over them (FSDP,
# parallelism.data_parallel_shard_degree -1), one thread each unless OMP_NUM_THREADS is set.
# Environment: CONFIG_FILE, NGPU or NPROC (ranks, default 2), TITAN_BUILD_DIR (default
# build), TITAN_SKIP_SETUP=1 (skip setup), TITAN_SKIP_ASSETS=1 (skip tools/fetch_assets.sh),
# MPIRUN_ARGS (extra mpirun arguments).
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
ranks=${NPROC:-${NGPU:-2}}
exe=$build_dir/apps/titan-train

# Debian 12's OpenBLAS runs generic kernels on AVX-512 CPUs it does not know; OpenBLAS
# reads this when it loads, so it is set here, never by the program (docs/design.md,
# "Threads and BLAS").
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
  echo "run_train: OPENBLAS_CORETYPE=SKYLAKEX (AVX-512 CPU; set OPENBLAS_CORETYPE to override)"
fi

if [ "$ranks" -le 1 ]; then
  set -x
  exec "$exe" --config "$config" "$@"
fi
if ! command -v mpirun >/dev/null; then
  echo "run_train: $ranks ranks need mpirun (tools/setup.sh installs Open MPI); or NGPU=1" >&2
  exit 2
fi
# As root (containers, CI), Open MPI wants both variables; --oversubscribe lets more ranks
# than cores start (tests, small machines). -x passes a variable to ranks on other hosts.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
mpi_env=()
for variable in OPENBLAS_CORETYPE OMP_NUM_THREADS; do
  if [ -n "${!variable:-}" ]; then mpi_env+=(-x "$variable"); fi
done
set -x
# shellcheck disable=SC2086
exec mpirun --oversubscribe -np "$ranks" "${mpi_env[@]}" ${MPIRUN_ARGS:-} "$exe" --config "$config" "$@"

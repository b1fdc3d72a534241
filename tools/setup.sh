#!/usr/bin/env bash
# Sets up a Debian 12 machine for titan.cpp and builds it. Safe to run again: packages that
# are already installed are not asked for (apt is skipped entirely when nothing is
# missing), and the build only recompiles what changed.
#
#   tools/setup.sh                 install what is missing, configure and build into build/
#   tools/setup.sh --with-torch    also install Debian's python3-torch (the PyTorch reference
#                                  in tools/reference/, run as /usr/bin/python3; ~220 packages,
#                                  so it is not part of the default setup or of the tests)
#   tools/setup.sh --with-plots    also install Debian's python3-matplotlib (tools/plot_metrics.py,
#                                  run as /usr/bin/python3; its test is skipped without it)
#   tools/setup.sh --with-slurm    also install Debian's Slurm and munge (tools/slurm/: the
#                                  tests' one-node Slurm; its test is skipped without them)
#   tools/setup.sh --no-build      packages only
#
# Environment:
#   TITAN_BUILD_DIR     build folder (default: build, relative to the repository root)
#   TITAN_BUILD_TYPE    CMake build type (default: Release)
#   TITAN_CMAKE_ARGS    extra CMake arguments, e.g. "-DTITAN_CUDA=OFF -DTITAN_SANITIZE=ON"
#   TITAN_JOBS          parallel compile jobs (default: nproc)
#   TITAN_WITH_TORCH=1  same as --with-torch
#   TITAN_WITH_PLOTS=1  same as --with-plots
#   TITAN_WITH_SLURM=1  same as --with-slurm
#
# CUDA is not a Debian package: when /usr/local/cuda/bin/nvcc exists the build finds it
# (TITAN_CUDA=AUTO); without it the CPU build stands alone.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
with_torch=${TITAN_WITH_TORCH:-0}
with_plots=${TITAN_WITH_PLOTS:-0}
with_slurm=${TITAN_WITH_SLURM:-0}
build=1
for arg in "$@"; do
  case $arg in
    --with-torch) with_torch=1 ;;
    --with-plots) with_plots=1 ;;
    --with-slurm) with_slurm=1 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { echo "setup: $*"; }
started=$SECONDS

# --- Debian packages -----------------------------------------------------------------
packages=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin                 # MPI: rendezvous, CPU collectives, mpirun
  libhdf5-openmpi-dev hdf5-tools             # parallel HDF5 checkpoints, h5ls/h5dump
  libyaml-cpp-dev libboost-program-options-dev libpcre2-dev   # config, CLI, tokenizer
  nlohmann-json3-dev                         # JSON: safetensors headers
  libopenblas-dev libopenblas-openmp-dev     # BLAS; the OpenMP flavour shares our threads
  libdnnl-dev                                # oneDNN: the CPU GEMMs
  ocl-icd-opencl-dev                         # oneDNN's CMake config asks for OpenCL (a
                                             # Recommends, which --no-install-recommends skips)
  libgtest-dev googletest                    # tests
  protobuf-compiler                          # tests: protoc --decode_raw reads TensorBoard events
  shellcheck                                 # tests: the jobscripts/ templates are clean
  python3
)
[ "$with_torch" = 1 ] && packages+=(python3-torch)
[ "$with_plots" = 1 ] && packages+=(python3-matplotlib)
[ "$with_slurm" = 1 ] && packages+=(slurmctld slurmd slurm-client munge)

installed() { [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]; }

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
# Node.js and npm come from elsewhere on some machines (Debian's npm conflicts with them),
# so they are only asked for when there is no npm at all.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

if [ ${#missing[@]} -eq 0 ]; then
  say "packages: all ${#packages[@]} present, apt skipped$( [ "$with_torch" = 1 ] || echo ' (python3-torch not asked for; --with-torch adds it)')"
else
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: missing ${missing[*]}; run as root or install sudo" >&2; exit 1; }
    sudo=(sudo)
  fi
  say "packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_started=$SECONDS
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
  say "packages: installed ${#missing[@]} in $((SECONDS - apt_started)) s"
fi

if [ -x /usr/local/cuda/bin/nvcc ]; then
  say "CUDA: $(/usr/local/cuda/bin/nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') at /usr/local/cuda (TITAN_CUDA=AUTO builds it)"
else
  say "CUDA: no /usr/local/cuda/bin/nvcc, CPU build only"
fi

# --- configure and build ---------------------------------------------------------------
if [ "$build" = 1 ]; then
  build_dir=${TITAN_BUILD_DIR:-build}
  [[ $build_dir = /* ]] || build_dir=$root/$build_dir
  jobs=${TITAN_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}
  # An existing folder made with another generator cannot be reused by this one.
  if [ -f "$build_dir/CMakeCache.txt" ] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$build_dir/CMakeCache.txt"; then
    echo "setup: $build_dir was configured with another generator; remove it or set TITAN_BUILD_DIR" >&2
    exit 1
  fi
  # TITAN_CMAKE_ARGS holds several arguments, split on spaces.
  read -r -a extra <<<"${TITAN_CMAKE_ARGS:-}"
  mkdir -p "$build_dir"
  log=$build_dir/configure.log
  say "configure: $build_dir (${TITAN_BUILD_TYPE:-Release}, Ninja${extra[*]:+, ${extra[*]}})"
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${TITAN_BUILD_TYPE:-Release}" \
        "${extra[@]}" >"$log" 2>&1 \
    || { cat "$log" >&2; echo "setup: configure failed (log: $log)" >&2; exit 1; }
  grep '^-- titan:' "$log" | sed 's/^-- /setup: /' || true
  build_started=$SECONDS
  say "build: ninja -j$jobs"
  ninja -C "$build_dir" -j"$jobs"
  say "build: done in $((SECONDS - build_started)) s"
fi
say "done in $((SECONDS - started)) s"

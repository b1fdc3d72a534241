#!/usr/bin/env bash
# Builds the GPU checks here and bundles them for the GPU machine (notes in docs/building.md,
# "The GPU-check build"). That machine has the CUDA driver and toolkit but none of Debian's
# libraries, so this build has no MPI and no HDF5 (a one-rank world, no checkpoints) and no
# oneDNN (its 40 MB library would not fit the carry; CPU GEMMs run on OpenBLAS), links
# yaml-cpp, Boost.Program_options and PCRE2 statically, and the bundle carries the few
# shared libraries left (OpenBLAS, libgomp, libgfortran). CUDA libraries are never carried.
#
#   tools/device/build_gpu_checks.sh            -> build-gpu/bundle/{bin,lib}
# Environment: TITAN_GPU_BUILD_DIR (default build-gpu), TITAN_GPU_TARGETS (default
# "cuda_tests titan-train bench_float8_gemm"), TITAN_CMAKE_ARGS (extra CMake arguments),
# TITAN_JOBS (default nproc).
# Then, with the device tool:  carry build-gpu/bundle, run
#   tools/device/run_gpu_checks.sh tests "$OUT"
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${TITAN_GPU_BUILD_DIR:-build-gpu}
[[ $build_dir = /* ]] || build_dir=$root/$build_dir
read -r -a targets <<<"${TITAN_GPU_TARGETS:-cuda_tests titan-train bench_float8_gemm}"
read -r -a extra <<<"${TITAN_CMAKE_ARGS:-}"
bundler=$root/tools/device/bundle_binaries.sh
[ -x /usr/local/cuda/bin/nvcc ] || { echo "build_gpu_checks: needs /usr/local/cuda/bin/nvcc" >&2; exit 1; }

started=$SECONDS
mkdir -p "$build_dir"
log=$build_dir/configure.log
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DTITAN_CUDA=ON -DTITAN_MPI=OFF -DTITAN_HDF5=OFF -DTITAN_DNNL=OFF -DTITAN_STATIC_DEPS=ON \
      -DTITAN_BUILD_BENCH=ON "${extra[@]}" >"$log" 2>&1 \
  || { cat "$log" >&2; echo "build_gpu_checks: configure failed (log: $log)" >&2; exit 1; }
grep '^-- titan' "$log" | sed 's/^-- /build_gpu_checks: /'
ninja -C "$build_dir" -j"${TITAN_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}" "${targets[@]}"

bundle=$build_dir/bundle
rm -rf "$bundle"
executables=()
for t in "${targets[@]}"; do
  exe=$(find "$build_dir" -path "$bundle" -prune -o -type f -name "$t" -perm -u+x -print | head -n 1)
  [ -n "$exe" ] || { echo "build_gpu_checks: no executable for target $t" >&2; exit 1; }
  executables+=("$exe")
done
bash "$bundler" "$bundle" "${executables[@]}"
echo "build_gpu_checks: $bundle ready in $((SECONDS - started)) s:"
(cd "$bundle" && find . -type f -printf '  %p %s bytes\n' | sort)

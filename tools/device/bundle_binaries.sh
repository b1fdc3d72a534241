#!/usr/bin/env bash
# Puts executables and the shared libraries they need into one folder that runs on the GPU
# machine: OUT/bin/<executables>, OUT/lib/<libraries>. That machine has glibc, libstdc++, the
# CUDA driver and toolkit (cudart, cuBLAS/cuBLASLt) and an NCCL, but none of Debian's other
# libraries, and it takes 64 MiB of files in all, so the bundle must stay under 60 MiB.
#
#   tools/device/bundle_binaries.sh OUT EXECUTABLE...
#   there: LD_LIBRARY_PATH=OUT/lib:/usr/local/cuda/lib64:<NCCL's lib> OUT/bin/cuda_tests
#
# Libraries that a program loads at run time without ldd seeing them (Open MPI's plug-ins,
# HDF5's parallel driver through MPI) cannot travel this way: build the GPU checks without
# MPI and HDF5 (tools/device/build_gpu_checks.sh does), and link small libraries statically.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT EXECUTABLE..." >&2; exit 2; }
out=$1
shift
mkdir -p "$out/bin" "$out/lib"

# Present on the GPU machine, or part of the C/C++ runtime: never carried.
provided='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|libpthread\.|librt\.|libgcc_s|libstdc\+\+'
provided+='|libcuda\.|libnvidia|libcudart|libcublas|libnccl|libnvrtc|libnvJitLink)'

for exe in "$@"; do
  [ -x "$exe" ] || { echo "bundle_binaries: $exe is not an executable" >&2; exit 1; }
  cp -L "$exe" "$out/bin/"
  # The symbol table is a sixth of an executable and nothing here reads it (no backtraces
  # are symbolized); the dynamic symbols stay.
  strip "$out/bin/$(basename "$exe")"
  # ldd prints "name => /path (address)" for each library it resolved.
  while read -r name path; do
    [[ $name =~ $provided ]] && continue
    case $name in
      libmpi* | libopen-* | libhdf5*)
        echo "bundle_binaries: warning: $(basename "$exe") links $name," \
             "whose plug-ins do not travel" >&2 ;;
    esac
    [ -e "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
  done < <(ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }')
done

kib=$(du -sk "$out" | cut -f1)
echo "bundle_binaries: $out holds $((kib / 1024)) MiB"
if [ "$kib" -gt $((60 * 1024)) ]; then
  echo "bundle_binaries: over 60 MiB; the GPU machine takes 64 MiB of files in all" >&2
  exit 1
fi

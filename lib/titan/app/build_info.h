// What this build of titan.cpp is made of, as text: version, build type, which backends
// (CUDA, NCCL, MPI, HDF5) and their library versions, the BLAS and how fast it runs, and the
// thread count, each backend asked through its own folder. `--version` of titan-train,
// titan-data and titan-ckpt prints it.
#pragma once

#include <string>

namespace titan::app {

// Several lines, each "name: value", ending in a newline. Measures sgemm once (a fraction
// of a second), since the core OpenBLAS chose decides CPU speed by up to 6x.
std::string build_info_text();

}  // namespace titan::app

// The --version text (app/build_info.h): every backend answers for itself, and a build
// without one says so.
#include <gtest/gtest.h>

#include <string>

#include "titan/app/build_info.h"
#include "titan/build_config.h"

namespace titan::app {
namespace {

TEST(BuildInfo, NamesTheVersionAndEveryBackendsLibrary) {
  const std::string text = build_info_text();
  EXPECT_EQ(text.rfind(std::string("titan.cpp ") + TITAN_VERSION, 0), 0u) << text;
  for (const char* line : {"\nCUDA: ", "\nNCCL: ", "\nMPI: ", "\nHDF5: ", "\nBLAS: OpenBLAS ",
                           "\nthreads: "}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << " in\n" << text;
  }
  EXPECT_EQ(text.find("MPI: no") == std::string::npos, TITAN_HAVE_MPI != 0) << text;
  EXPECT_EQ(text.find("HDF5: no") == std::string::npos, TITAN_HAVE_HDF5 != 0) << text;
  EXPECT_EQ(text.find("NCCL: no") == std::string::npos, TITAN_HAVE_NCCL != 0) << text;
  EXPECT_EQ(text.back(), '\n');
}

}  // namespace
}  // namespace titan::app

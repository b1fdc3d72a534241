// MPI_CHECK(call): throws titan::Error with file:line, the call and MPI's own error string.
// Communicators made here return errors (MPI_ERRORS_RETURN) instead of aborting inside MPI,
// so the check sees them.
#pragma once

#include <mpi.h>

#include <string>

#include "titan/core/error.h"

namespace titan::distributed::detail {

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, size_t(length));
}

}  // namespace titan::distributed::detail

#define MPI_CHECK(call)                                                          \
  do {                                                                           \
    const int titan_mpi_status_ = (call);                                        \
    TITAN_CHECK(titan_mpi_status_ == MPI_SUCCESS)                                \
        << #call << ": " << ::titan::distributed::detail::mpi_error_string(titan_mpi_status_); \
  } while (0)

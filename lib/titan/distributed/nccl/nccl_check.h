// Check macro for NCCL: throws titan::Error with file:line, the call, NCCL's name for the
// result (ncclGetErrorString) and NCCL's own account of what went wrong (ncclGetLastError).
//
//   NCCL_CHECK(ncclGetUniqueId(&id));
//
// ncclInProgress is not success: calls on a nonblocking communicator that may return it go
// through NcclCommunicator's own polling (nccl_communicator.cpp), not through this macro.
#pragma once

#include <nccl.h>

#include <string>

#include "titan/core/error.h"

namespace titan::distributed::detail {

// NCCL's last error text in parentheses, or nothing when it has none. The text lives in a
// thread-local buffer inside NCCL (the comm argument is unused), so it describes the latest
// failing call of this thread.
inline std::string nccl_last_error(ncclComm_t comm = nullptr) {
  const char* text = ncclGetLastError(comm);
  if (text == nullptr || text[0] == '\0') return "";
  return std::string(" (") + text + ")";
}

}  // namespace titan::distributed::detail

#define NCCL_CHECK(call)                                                            \
  do {                                                                              \
    const ncclResult_t titan_nccl_status_ = (call);                                 \
    TITAN_CHECK(titan_nccl_status_ == ncclSuccess)                                  \
        << #call << ": " << ncclGetErrorString(titan_nccl_status_)                  \
        << ::titan::distributed::detail::nccl_last_error();                                \
  } while (0)

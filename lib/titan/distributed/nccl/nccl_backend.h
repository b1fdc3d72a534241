// What code outside the NCCL backend needs of it, without NCCL's or CUDA's headers: an
// NcclCommunicator over the ranks of a host group (the mesh's tensor groups,
// distributed/mesh.h) and the library's version (--version).
#pragma once

#include <memory>
#include <string>

#include "titan/distributed/communicator.h"

namespace titan::distributed::nccl {

// An NcclCommunicator (nccl_communicator.h) on the current CUDA device, ordered after the
// device's compute stream; collective over `bootstrap`, whose ranks it joins.
std::unique_ptr<Communicator> make_communicator(Communicator& bootstrap, std::string name);

// "2.28.3", from ncclGetVersion.
std::string library_version();

}  // namespace titan::distributed::nccl

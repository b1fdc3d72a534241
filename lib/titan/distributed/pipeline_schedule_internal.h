// Helpers shared by pipeline_schedule.cpp and pipeline_simulator.cpp only; not part of the
// interface (pipeline_schedule.h), so nothing else includes this.
#pragma once

#include "titan/distributed/pipeline_schedule.h"

namespace titan::distributed::detail {

inline Action make(ActionKind kind, int stage, int microbatch) {
  return {kind, stage, microbatch};
}

}  // namespace titan::distributed::detail

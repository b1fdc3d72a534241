#include "titan/core/comm_poll.h"

#include <cstdlib>
#include <cstring>

namespace titan {
namespace {

thread_local CommPoll installed = nullptr;

bool polls_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("TITAN_COMM_POLL");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return enabled;
}

}  // namespace

void set_comm_poll(CommPoll poll) { installed = polls_enabled() ? poll : nullptr; }

CommPoll installed_comm_poll() { return installed; }

void poll_communication() {
  if (installed != nullptr) installed();
}

}  // namespace titan

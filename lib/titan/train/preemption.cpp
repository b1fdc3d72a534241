#include "titan/train/preemption.h"

#include <atomic>
#include <csignal>
#include <cstdio>

#include "titan/core/error.h"

namespace titan::train {
namespace {

volatile std::sig_atomic_t first_signal = 0;
std::atomic<bool> installed{false};

extern "C" void on_stop_signal(int signal) {
  if (first_signal == 0) first_signal = signal;
}

}  // namespace

void install_preemption_handlers() {
  if (installed.exchange(true)) return;
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (const int signal : {SIGUSR1, SIGTERM}) {
    TITAN_CHECK(sigaction(signal, &action, nullptr) == 0)
        << "sigaction(" << stop_signal_name(signal) << ") failed";
  }
}

bool preemption_handlers_installed() { return installed.load(); }

int pending_stop_signal() { return int(first_signal); }

void note_stop_signal(int signal) { on_stop_signal(signal); }

const char* stop_signal_name(int signal) {
  switch (signal) {
    case SIGUSR1: return "SIGUSR1";
    case SIGTERM: return "SIGTERM";
    default: break;
  }
  static thread_local char text[32];
  std::snprintf(text, sizeof text, "signal %d", signal);
  return text;
}

}  // namespace titan::train

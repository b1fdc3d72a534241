#include "titan/train/preemption.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>

#include "titan/core/error.h"

namespace titan::train {
namespace {

volatile std::sig_atomic_t first_signal = 0;
std::atomic<bool> held{false};

void record(int signal) {
  if (first_signal == 0) first_signal = signal;
}

extern "C" void on_stop_signal(int signal) { record(signal); }

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void hold_stop_signals() {
  if (held.exchange(true)) return;
  const sigset_t set = stop_signals();
  TITAN_CHECK(pthread_sigmask(SIG_BLOCK, &set, nullptr) == 0) << "pthread_sigmask failed";
  // Only a thread that unblocks the signals itself ever runs this handler.
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  action.sa_mask = set;
  action.sa_flags = SA_RESTART;
  for (const int signal : {SIGUSR1, SIGTERM}) {
    TITAN_CHECK(sigaction(signal, &action, nullptr) == 0)
        << "sigaction(" << stop_signal_name(signal) << ") failed";
  }
}

bool stop_signals_held() { return held.load(); }

int pending_stop_signal() {
  if (held.load()) {
    const sigset_t set = stop_signals();
    const timespec now = {0, 0};
    for (int signal; (signal = sigtimedwait(&set, nullptr, &now)) > 0;) record(signal);
  }
  return int(first_signal);
}

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

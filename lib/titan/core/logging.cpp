#include "titan/core/logging.h"

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <set>

namespace titan::log {
namespace {

int g_rank = 0;
Level g_level = Level::Info;
std::mutex g_mutex;

const char* level_tag(Level level) {
  switch (level) {
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warning";
    case Level::Error: return "error";
  }
  return "";
}

void vprint(Level level, const char* fmt, va_list args) {
  if (!enabled(level)) return;
  char message[4096];
  std::vsnprintf(message, sizeof message, fmt, args);
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", std::localtime(&now));
  std::lock_guard lock(g_mutex);
  if (g_rank == 0) {
    std::fprintf(stderr, "[titan %s] %s%s%s\n", stamp,
                 level >= Level::Warn ? level_tag(level) : "", level >= Level::Warn ? ": " : "",
                 message);
  } else {
    std::fprintf(stderr, "[rank %d] %s: %s\n", g_rank, level_tag(level), message);
  }
  std::fflush(stderr);
}

}  // namespace

void set_rank(int rank) { g_rank = rank; }
void set_level(Level level) { g_level = level; }
bool enabled(Level level) { return level >= g_level && (g_rank == 0 || level >= Level::Warn); }

#define TITAN_LOG_FUNCTION(name, level) \
  void name(const char* fmt, ...) {     \
    va_list args;                       \
    va_start(args, fmt);                \
    vprint(level, fmt, args);           \
    va_end(args);                       \
  }
TITAN_LOG_FUNCTION(debug, Level::Debug)
TITAN_LOG_FUNCTION(info, Level::Info)
TITAN_LOG_FUNCTION(warn, Level::Warn)
TITAN_LOG_FUNCTION(error, Level::Error)
#undef TITAN_LOG_FUNCTION

void warn_once(const std::string& key, const std::string& message) {
  static std::set<std::string> seen;
  {
    std::lock_guard lock(g_mutex);
    if (!seen.insert(key).second) return;
  }
  warn("%s", message.c_str());
}

}  // namespace titan::log

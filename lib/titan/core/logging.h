// Rank-aware logging to stderr (stdout is kept for output a user asked for, such as
// --print-config). Rank 0 prints everything at or above the level; other ranks print only
// warnings and errors, prefixed with their rank, so N ranks do not print N copies.
#pragma once

#include <string>

namespace titan::log {

enum class Level { Debug, Info, Warn, Error };

void set_rank(int rank);
void set_level(Level level);
bool enabled(Level level);

void debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Prints a warning the first time `key` is seen in this process.
void warn_once(const std::string& key, const std::string& message);

}  // namespace titan::log

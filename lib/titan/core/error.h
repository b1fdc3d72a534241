// Errors and check macros.
//
// Two failure classes, on purpose (docs/design.md, "Errors, exit codes, logs"):
//   InputError    bad input found the same way on every rank (config, CLI, mesh, data,
//                 checkpoint): the app prints one line and exits 2.
//   Error         anything else (a bug, I/O, a device or communicator failure): exit 1.
//   DivergedError a non-finite loss or gradient norm: exit 3.
//
//   TITAN_CHECK(n > 0) << "n must be positive, got " << n;        // throws Error
//   TITAN_CHECK_INPUT(ok) << "training.steps: must be >= 1";      // throws InputError
//
// The message names file:line for Error; an InputError carries only the user-facing text.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace titan {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class InputError : public Error {
 public:
  using Error::Error;
};

class DivergedError : public Error {
 public:
  using Error::Error;
};

// Exit codes of docs/design.md's table.
enum class ExitCode : int { Success = 0, Failure = 1, BadInput = 2, Diverged = 3 };

namespace detail {

// Collects a message with operator<<; ErrorThrower & builder throws it.
template <class E>
class ErrorBuilder {
 public:
  ErrorBuilder(const char* file, int line, const char* condition) {
    if (file != nullptr) stream_ << file << ":" << line << ": ";
    if (condition != nullptr) stream_ << "check failed: " << condition << ": ";
  }
  template <class T>
  ErrorBuilder& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }
  std::string str() const { return stream_.str(); }

 private:
  std::ostringstream stream_;
};

struct ErrorThrower {
  template <class E>
  [[noreturn]] void operator&(const ErrorBuilder<E>& builder) const {
    throw E(builder.str());
  }
};

}  // namespace detail
}  // namespace titan

// `if (c) {} else throw-expression` keeps the macro one statement that still takes `<<`.
#define TITAN_CHECK(cond)    \
  if (cond) {                \
  } else                     \
    ::titan::detail::ErrorThrower() & \
        ::titan::detail::ErrorBuilder<::titan::Error>(__FILE__, __LINE__, #cond)

#define TITAN_CHECK_INPUT(cond) \
  if (cond) {                   \
  } else                        \
    ::titan::detail::ErrorThrower() & \
        ::titan::detail::ErrorBuilder<::titan::InputError>(nullptr, 0, nullptr)

// Unconditional forms, for `default:` branches and the like.
#define TITAN_FAIL() TITAN_CHECK(false)
#define TITAN_FAIL_INPUT() TITAN_CHECK_INPUT(false)

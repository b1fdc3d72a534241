// Progress of a long loop, told to a person: how far, how fast, how long to go.
//
//   Progress progress("tokenize", total_bytes, "B");
//   for (...) { ...; progress.advance(text.size()); }
//   progress.finish();
//
// On a terminal (stderr is a tty): one line on stderr, redrawn in place at most ten times a
// second, with a bar, the percentage, the amount, the rate and the time left:
//   tokenize [#########                     ]  31.2%  14.2/45.6 MB  3.40 MB/s  ETA 9s
// finish() draws it a last time with the elapsed time instead of the ETA, and ends the line.
// Elsewhere (a log file, a batch job, a test): plain lines through log::info, at most one
// every ten seconds, none before the first ten seconds, and one at the end:
//   tokenize: 14.2/45.6 MB (31.2%), 3.40 MB/s, ETA 9s
//   tokenize: done, 45.6 MB in 13.4s, 3.40 MB/s
// The rate is the average since the start; the ETA is what is left at that rate.
//
// The unit "B" counts bytes and is shown with decimal prefixes (kB, MB, GB); any other unit
// is a plural noun ("merges", "tensors") shown after the count. A total <= 0 is unknown:
// no bar, percentage or ETA.
//
// Library code that runs long takes a ProgressCallback (done, total) instead of a Progress,
// so it never decides how progress is shown or depends on a terminal; the app passes
// progress_callback("tokenize", "B"). A Progress is for one thread on one rank (log::info
// prints on rank 0 only; the terminal line is written by whichever rank holds it).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace titan {

enum class ProgressMode {
  Auto,      // Terminal when stderr is a tty, Lines otherwise
  Terminal,  // one redrawn line
  Lines,     // a line every line_interval_s and at the end
};

struct ProgressOptions {
  ProgressMode mode = ProgressMode::Auto;
  // Seconds on a monotonic clock; empty: std::chrono::steady_clock. Tests pass a fake one.
  std::function<double()> clock;
  // Where the text goes; empty: Terminal writes the redraw text (it starts with '\r') to
  // stderr, Lines passes each line (no newline) to log::info.
  std::function<void(const std::string&)> write;
  double redraw_interval_s = 0.1;  // Terminal
  double line_interval_s = 10.0;   // Lines
};

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit, ProgressOptions options = {});
  // An unfinished Progress on a terminal ends its line, so what follows (an error) starts
  // on a fresh one; it writes no end line.
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t units = 1);
  void advance_to(int64_t done);  // done >= what is done already
  // Draws or writes the end; later calls, and advance() after it, do nothing.
  void finish();

  int64_t done() const { return done_; }
  int64_t total() const { return total_; }
  ProgressMode mode() const { return mode_; }
  bool finished() const { return finished_; }

 private:
  void maybe_show();
  void show_terminal(bool final);
  void show_line(bool final);
  double now() const;

  std::string label_, unit_;
  int64_t total_ = 0;
  int64_t done_ = 0;
  ProgressOptions options_;
  ProgressMode mode_;
  double start_s_ = 0.0;
  std::optional<double> last_shown_s_;  // last redraw (Terminal) or line (Lines)
  bool drawn_ = false;                  // Terminal: a line is on screen, unended
  bool finished_ = false;
};

// What long library loops report: `done` of `total` units; done == total is the last call.
using ProgressCallback = std::function<void(int64_t done, int64_t total)>;

// A ProgressCallback that shows a Progress made on its first call (when the total is known)
// and finished by the call where done >= total; calls after that do nothing.
ProgressCallback progress_callback(std::string label, std::string unit, ProgressOptions options = {});

// How Progress writes amounts (exposed for tests): progress_amount_text(14'200'000, "B") is
// "14.2 MB", progress_amount_text(1789, "merges") "1789 merges", progress_amount_text(
// 2'500'000, "tokens") "2.50M tokens". progress_duration_text(425) is "7m05s".
std::string progress_amount_text(double amount, std::string_view unit);
std::string progress_duration_text(double seconds);

}  // namespace titan

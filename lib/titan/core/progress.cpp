#include "titan/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "titan/core/logging.h"

namespace titan {
namespace {

constexpr int kBarWidth = 30;
constexpr const char* kPrefixes[] = {"", "k", "M", "G", "T", "P"};
constexpr int kPrefixCount = int(sizeof(kPrefixes) / sizeof(kPrefixes[0]));

bool is_bytes(std::string_view unit) { return unit == "B"; }

// Three significant digits: 3.40, 14.2, 456.
std::string three_digits(double value) {
  char text[32];
  const char* format = value < 9.995 ? "%.2f" : value < 99.95 ? "%.1f" : "%.0f";
  std::snprintf(text, sizeof text, format, value);
  return text;
}

// The power of 1000 that brings `value` under 1000 (the largest prefix at most).
int prefix_of(double value) {
  int prefix = 0;
  while (prefix + 1 < kPrefixCount && std::abs(value) >= 999.5) {
    value /= 1000.0;
    ++prefix;
  }
  return prefix;
}

std::string integer_text(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.0f", value);
  return text;
}

std::string scaled_text(double value, int prefix) {
  return three_digits(value / std::pow(1000.0, prefix));
}

// Counts exactly below 100,000, then "123k", "2.50M".
std::string count_text(double count) {
  if (count < 100'000) return integer_text(count);
  const int prefix = prefix_of(count);
  return scaled_text(count, prefix) + kPrefixes[prefix];
}

// "14.2/45.6 MB", "1200/4500 merges", "1.20M/4.50M tokens".
std::string fraction_text(int64_t done, int64_t total, const std::string& unit) {
  if (is_bytes(unit)) {
    if (total < 1000) return std::to_string(done) + "/" + std::to_string(total) + " B";
    const int prefix = prefix_of(double(total));
    return scaled_text(double(done), prefix) + "/" + scaled_text(double(total), prefix) + " " +
           kPrefixes[prefix] + "B";
  }
  return count_text(double(done)) + "/" + count_text(double(total)) + " " + unit;
}

// "3.40 MB/s", "152 merges/s", "15.2k tokens/s"; "--" before any time has passed.
std::string rate_text(double done, double elapsed_s, const std::string& unit) {
  if (elapsed_s <= 0.0) return "-- " + (is_bytes(unit) ? std::string("B") : unit) + "/s";
  const double rate = done / elapsed_s;
  const int prefix = prefix_of(rate);
  return scaled_text(rate, prefix) + (is_bytes(unit) ? " " : "") + kPrefixes[prefix] +
         (is_bytes(unit) ? "B" : " " + unit) + "/s";
}

std::string eta_text(int64_t done, int64_t total, double elapsed_s) {
  if (done <= 0 || elapsed_s <= 0.0) return "ETA --";
  const double left_s = double(std::max<int64_t>(total - done, 0)) * elapsed_s / double(done);
  return "ETA " + progress_duration_text(left_s);
}

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string progress_amount_text(double amount, std::string_view unit) {
  if (is_bytes(unit)) {
    if (amount < 999.5) return integer_text(amount) + " B";
    const int prefix = prefix_of(amount);
    return scaled_text(amount, prefix) + " " + kPrefixes[prefix] + "B";
  }
  return count_text(amount) + " " + std::string(unit);
}

std::string progress_duration_text(double seconds) {
  char text[32];
  if (!std::isfinite(seconds)) return "--";
  seconds = std::max(seconds, 0.0);
  if (seconds < 9.95) {
    std::snprintf(text, sizeof text, "%.1fs", seconds);
  } else if (seconds < 59.5) {
    std::snprintf(text, sizeof text, "%.0fs", seconds);
  } else if (seconds < 3599.5) {
    const long long whole = std::llround(seconds);
    std::snprintf(text, sizeof text, "%lldm%02llds", whole / 60, whole % 60);
  } else {
    const long long minutes = std::llround(seconds / 60.0);
    std::snprintf(text, sizeof text, "%lldh%02lldm", minutes / 60, minutes % 60);
  }
  return text;
}

Progress::Progress(std::string label, int64_t total, std::string unit, ProgressOptions options)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), options_(std::move(options)),
      mode_(options_.mode) {
  if (mode_ == ProgressMode::Auto) {
    mode_ = isatty(STDERR_FILENO) != 0 ? ProgressMode::Terminal : ProgressMode::Lines;
  }
  if (!options_.clock) options_.clock = steady_seconds;
  if (!options_.write) {
    if (mode_ == ProgressMode::Terminal) {
      options_.write = [](const std::string& text) {
        std::fputs(text.c_str(), stderr);
        std::fflush(stderr);
      };
    } else {
      options_.write = [](const std::string& line) { log::info("%s", line.c_str()); };
    }
  }
  start_s_ = now();
}

Progress::~Progress() {
  if (mode_ != ProgressMode::Terminal || !drawn_ || finished_) return;
  try {
    options_.write("\n");
  } catch (...) {
    // A destructor that runs while an error unwinds must not throw a second one.
  }
}

double Progress::now() const { return options_.clock(); }

void Progress::advance(int64_t units) { advance_to(done_ + units); }

void Progress::advance_to(int64_t done) {
  if (finished_ || done < done_) return;
  done_ = done;
  maybe_show();
}

void Progress::maybe_show() {
  const double t = now();
  if (mode_ == ProgressMode::Terminal) {
    if (last_shown_s_ && t - *last_shown_s_ < options_.redraw_interval_s) return;
    last_shown_s_ = t;
    show_terminal(/*final=*/false);
  } else {
    if (t - last_shown_s_.value_or(start_s_) < options_.line_interval_s) return;
    last_shown_s_ = t;
    show_line(/*final=*/false);
  }
}

void Progress::finish() {
  if (finished_) return;
  if (mode_ == ProgressMode::Terminal) {
    show_terminal(/*final=*/true);
  } else {
    show_line(/*final=*/true);
  }
  finished_ = true;
}

void Progress::show_terminal(bool final) {
  const double elapsed_s = now() - start_s_;
  std::string text = "\r" + label_;
  if (total_ > 0) {
    const double fraction = std::clamp(double(done_) / double(total_), 0.0, 1.0);
    const int filled = int(fraction * kBarWidth);  // full only when done
    char percent[16];
    std::snprintf(percent, sizeof percent, "%5.1f%%", 100.0 * fraction);
    text += " [" + std::string(size_t(filled), '#') + std::string(size_t(kBarWidth - filled), ' ') + "] " +
            percent + "  " + fraction_text(done_, total_, unit_);
  } else {
    text += "  " + progress_amount_text(double(done_), unit_);
  }
  // A rate over the first few milliseconds (the first draw is at once) is noise: "--".
  const double rate_s = final || elapsed_s >= options_.redraw_interval_s ? elapsed_s : 0.0;
  text += "  " + rate_text(double(done_), rate_s, unit_) + "  ";
  text += final || total_ <= 0 ? progress_duration_text(elapsed_s) : eta_text(done_, total_, rate_s);
  text += "\x1b[K";  // clear what a longer earlier line left
  if (final) text += "\n";
  options_.write(text);
  drawn_ = !final;
}

void Progress::show_line(bool final) {
  const double elapsed_s = now() - start_s_;
  std::string line = label_ + ": ";
  if (final) {
    line += "done, " + progress_amount_text(double(done_), unit_) + " in " +
            progress_duration_text(elapsed_s) + ", " + rate_text(double(done_), elapsed_s, unit_);
  } else if (total_ > 0) {
    char percent[16];
    std::snprintf(percent, sizeof percent, "%.1f%%",
                  100.0 * std::clamp(double(done_) / double(total_), 0.0, 1.0));
    line += fraction_text(done_, total_, unit_) + " (" + percent + "), " +
            rate_text(double(done_), elapsed_s, unit_) + ", " + eta_text(done_, total_, elapsed_s);
  } else {
    line += progress_amount_text(double(done_), unit_) + ", " + rate_text(double(done_), elapsed_s, unit_);
  }
  options_.write(line);
}

ProgressCallback progress_callback(std::string label, std::string unit, ProgressOptions options) {
  struct State {
    std::string label, unit;
    ProgressOptions options;
    std::unique_ptr<Progress> progress;
  };
  auto state = std::make_shared<State>(State{std::move(label), std::move(unit), std::move(options), nullptr});
  return [state](int64_t done, int64_t total) {
    if (state->progress && state->progress->finished()) return;
    if (!state->progress) {
      state->progress = std::make_unique<Progress>(state->label, total, state->unit, state->options);
    }
    state->progress->advance_to(done);
    if (done >= total) state->progress->finish();
  };
}

}  // namespace titan

// The step log's two forms; step_log.h says what each holds and why.
#include "titan/metrics/step_log.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string_view>
#include <system_error>

#include "titan/core/error.h"
#include "titan/core/progress.h"
#include "titan/core/logging.h"

namespace titan::metrics {
namespace {

// The shortest decimal that reads back to the same double (std::to_chars without a
// format), or null where JSON has no number for the value.
std::string json_number(double value) {
  if (!std::isfinite(value)) return "null";
  char buffer[32];
  const auto [end, error] = std::to_chars(buffer, buffer + sizeof buffer, value);
  TITAN_CHECK(error == std::errc()) << "step log: cannot format " << value;
  return std::string(buffer, end);
}

// 1234567 -> "1,234,567", as Python's format(n, ",") prints torchtitan's tps.
std::string group_thousands(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "nan" : (value > 0 ? "inf" : "-inf");
  const long long rounded = std::llround(value);
  const std::string digits = std::to_string(rounded < 0 ? -rounded : rounded);
  std::string grouped = rounded < 0 ? "-" : "";
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  return grouped;
}

}  // namespace

double achieved_tflops(double flops_per_token, double tokens_per_second) {
  return flops_per_token * tokens_per_second / 1e12;
}

double mfu_percent(double tflops, double peak_tflops) {
  TITAN_CHECK(peak_tflops > 0) << "MFU needs a positive peak TFLOP/s, got " << peak_tflops;
  return 100.0 * tflops / peak_tflops;
}

std::string step_log_line(const StepMetrics& m) {
  char line[512];
  std::snprintf(line, sizeof line,
                "step: %lld  loss: %.4f  grad_norm: %.4f  lr: %.1e  memory: %.2fGiB  tps: %s  "
                "tflops: %.2f  mfu: %.2f%%",
                (long long)m.step, m.loss, m.grad_norm, m.lr, m.memory_gib,
                group_thousands(m.tokens_per_second).c_str(), m.tflops, m.mfu_percent);
  std::string text = line;
  if (m.comm_percent) {
    std::snprintf(line, sizeof line, "  comm: %.1f%%", *m.comm_percent);
    text += line;
  }
  if (m.busy) {
    std::snprintf(line, sizeof line, "  busy: %.3g/%.3g/%.3gs slowest %s", m.busy->min_s,
                  m.busy->median_s, m.busy->max_s, m.busy->slowest.c_str());
    text += line;
  }
  if (m.moe_load_imbalance) {
    std::snprintf(line, sizeof line, "  moe_load: %.2fx (layer %lld)", *m.moe_load_imbalance,
                  (long long)m.moe_worst_layer);
    text += line;
  }
  if (m.eta_s) text += "  eta: " + progress_duration_text(*m.eta_s);
  if (m.val_loss && m.val_perplexity) {
    std::snprintf(line, sizeof line, "  val_loss: %.4f  val_ppl: %.1f", *m.val_loss, *m.val_perplexity);
    text += line;
  }
  return text;
}

std::string step_json_line(const StepMetrics& m) {
  std::string json = "{\"step\": " + std::to_string(m.step);
  auto add = [&json](std::string_view key, const std::string& value) {
    json.append(", \"").append(key).append("\": ").append(value);
  };
  add("loss", json_number(m.loss));
  add("grad_norm", json_number(m.grad_norm));
  add("lr", json_number(m.lr));
  add("tps", json_number(m.tokens_per_second));
  add("tflops", json_number(m.tflops));
  add("mfu", json_number(m.mfu_percent));
  add("memory_gib", json_number(m.memory_gib));
  if (m.comm_percent) add("comm_percent", json_number(*m.comm_percent));
  if (m.comm_mib_per_step) add("comm_mib_per_step", json_number(*m.comm_mib_per_step));
  if (m.busy) {
    add("busy_s_min", json_number(m.busy->min_s));
    add("busy_s_median", json_number(m.busy->median_s));
    add("busy_s_max", json_number(m.busy->max_s));
    add("slowest_rank", std::to_string(m.busy->slowest_rank));
  }
  if (m.eta_s) add("eta_s", json_number(*m.eta_s));
  if (m.val_loss) add("val_loss", json_number(*m.val_loss));
  if (m.val_perplexity) add("val_perplexity", json_number(*m.val_perplexity));
  if (m.moe_load_imbalance) {
    add("moe_load_imbalance", json_number(*m.moe_load_imbalance));
    add("moe_worst_layer", std::to_string(m.moe_worst_layer));
  }
  add("tokens", std::to_string(m.tokens));
  add("elapsed_s", json_number(m.elapsed_s));
  json += "}";
  return json;
}

StepLogger::StepLogger(const std::filesystem::path& dump_folder)
    : path_(dump_folder / kFileName) {
  std::error_code error;
  std::filesystem::create_directories(dump_folder, error);
  TITAN_CHECK(!error) << "step log: cannot create " << dump_folder << ": " << error.message();
  file_.reset(std::fopen(path_.c_str(), "a"));
  TITAN_CHECK(file_ != nullptr) << "step log: cannot open " << path_ << " for append: "
                                << std::strerror(errno);
}

void StepLogger::log(const StepMetrics& metrics) {
  const std::string line = step_json_line(metrics) + "\n";
  const bool written = std::fwrite(line.data(), 1, line.size(), file_.get()) == line.size();
  const bool flushed = std::fflush(file_.get()) == 0;
  TITAN_CHECK(written && flushed) << "step log: cannot write " << path_ << ": "
                                  << std::strerror(errno);
  log::info("%s", step_log_line(metrics).c_str());
}

}  // namespace titan::metrics

#include "titan/core/trace.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include <nlohmann/json.hpp>

#include "titan/core/error.h"

namespace titan {

TraceRecorder& trace_recorder() {
  static TraceRecorder recorder;
  return recorder;
}

double trace_now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void TraceRecorder::start() {
  std::lock_guard lock(mutex_);
  events_.clear();
  recording_ = true;
}

void TraceRecorder::add(TraceEvent event) {
  std::lock_guard lock(mutex_);
  events_.push_back(std::move(event));
}

size_t TraceRecorder::size() const {
  std::lock_guard lock(mutex_);
  return events_.size();
}

void TraceRecorder::write(const std::string& path, int rank) const {
  nlohmann::json events = nlohmann::json::array();
  {
    std::lock_guard lock(mutex_);
    for (const TraceEvent& e : events_) {
      nlohmann::json event = {{"name", e.name}, {"ph", "X"},   {"ts", e.start_us},
                              {"dur", e.duration_us}, {"pid", rank}, {"tid", e.thread}};
      if (!e.arg_name.empty()) event["args"] = {{e.arg_name, e.arg_value}};
      events.push_back(std::move(event));
    }
  }
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path);
  TITAN_CHECK(bool(out)) << "cannot write the trace " << path;
  out << nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() << "\n";
}

TraceSpan::TraceSpan(std::string name, const char* arg_name, int64_t arg_value)
    : active_(trace_recorder().recording()) {
  if (!active_) return;
  event_.name = std::move(name);
  if (arg_name) event_.arg_name = arg_name;
  event_.arg_value = arg_value;
  event_.thread = std::hash<std::thread::id>{}(std::this_thread::get_id()) % 100000;
  event_.start_us = trace_now_us();
}

TraceSpan::~TraceSpan() {
  if (!active_) return;
  event_.duration_us = trace_now_us() - event_.start_us;
  trace_recorder().add(std::move(event_));
}

}  // namespace titan

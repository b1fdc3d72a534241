// Trace spans: what ran, when, for how long, as Chrome trace-event JSON that Perfetto and
// chrome://tracing load (one file per rank, rank<r>_trace.json).
//
//   { TraceSpan span("layers.3.forward"); ... }                  // a complete ("X") event
//   { TraceSpan span("all_gather", "bytes", 4194304); ... }      // with one argument
//   trace_recorder().start();  ...  trace_recorder().write("out/rank0_trace.json", 0);
//
// Spans nest by time on one thread (the training thread; spans from other threads carry
// their own tid). Recording costs one clock read at each end and nothing when stopped, so
// the spans stay in the code; profiling.* decides when they are recorded (train/trainer.cpp
// runs torchtitan's schedule).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace titan {

struct TraceEvent {
  std::string name;
  double start_us = 0, duration_us = 0;
  uint64_t thread = 0;
  std::string arg_name;  // empty: no argument
  int64_t arg_value = 0;
};

class TraceRecorder {
 public:
  void start();
  void stop() { recording_ = false; }
  bool recording() const { return recording_; }
  void add(TraceEvent event);
  // Writes the events recorded since start() as {"traceEvents": [...]} with pid = rank.
  void write(const std::string& path, int rank) const;
  size_t size() const;

 private:
  bool recording_ = false;
  mutable std::mutex mutex_;
  std::vector<TraceEvent> events_;
};

TraceRecorder& trace_recorder();
double trace_now_us();  // microseconds on a steady clock

class TraceSpan {
 public:
  explicit TraceSpan(std::string name, const char* arg_name = nullptr, int64_t arg_value = 0);
  // A literal name (every op's span, ops/dispatch.h): no string is built unless recording.
  explicit TraceSpan(const char* name)
      : TraceSpan(trace_recorder().recording() ? std::string(name) : std::string()) {}
  ~TraceSpan();
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

 private:
  bool active_;
  TraceEvent event_;
};

}  // namespace titan

// The pipeline schedule simulator: checks a schedule's lists (shape, every pass once, the
// order on each rank, the data-parallel actions' places), runs them on a simulated
// timeline, measures makespan, bubble and activations held, and draws the result as text or
// SVG. The generators and the CSV format are in pipeline_schedule.cpp. See
// pipeline_schedule.h for the contract.
#include <algorithm>
#include <array>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string_view>

#include "titan/core/error.h"
#include "titan/distributed/pipeline_schedule.h"
#include "titan/distributed/pipeline_schedule_internal.h"

namespace titan::distributed {
namespace {

using detail::make;

// The simulator's time model: a full backward costs two forwards, its halves one each.
int64_t compute_duration(ActionKind kind) {
  switch (kind) {
    case ActionKind::Forward: return 1;
    case ActionKind::Backward: return 2;
    case ActionKind::BackwardInput: return 1;
    case ActionKind::BackwardWeight: return 1;
    default: return 0;  // transfers and data-parallel actions are free
  }
}

// ---------------------------------------------------------------------------------------
// The simulator's steps: the shape, where each action sits, every pass once, the order on
// each rank, then the timeline and what it measures.

// The kinds with a microbatch (compute and transfers): the enum's first eight. The
// data-parallel kinds after them concern a whole stage and have no cell in a PassTable.
constexpr int kActionKinds = 8;
static_assert(static_cast<int>(ActionKind::Unshard) == kActionKinds);

// One value per action kind and (stage, microbatch): a position in a rank's list, a finish
// time. -1 is "not there (yet)".
template <class T>
class PassTable {
 public:
  explicit PassTable(const Schedule& schedule)
      : microbatches_(schedule.microbatches),
        values_(kActionKinds,
                std::vector<T>(static_cast<size_t>(schedule.stages) * microbatches_, -1)) {}
  T& operator()(ActionKind kind, int stage, int microbatch) {
    return values_[static_cast<int>(kind)][cell(stage, microbatch)];
  }
  T operator()(ActionKind kind, int stage, int microbatch) const {
    return values_[static_cast<int>(kind)][cell(stage, microbatch)];
  }
  // The pass that sends the gradient on: B where the schedule runs B, else I.
  ActionKind backward_input_kind(int stage, int microbatch) const {
    return (*this)(ActionKind::Backward, stage, microbatch) >= 0 ? ActionKind::Backward
                                                                 : ActionKind::BackwardInput;
  }
  T backward_input(int stage, int microbatch) const {
    return (*this)(backward_input_kind(stage, microbatch), stage, microbatch);
  }

 private:
  size_t cell(int stage, int microbatch) const {
    return static_cast<size_t>(stage) * microbatches_ + microbatch;
  }
  int microbatches_;
  std::vector<std::vector<T>> values_;
};

// "rank 1", and "rank 1 (row 2)" for a schedule read from a CSV, whose rows users edit.
std::string rank_label(const Schedule& schedule, int rank) {
  std::string label = "rank " + std::to_string(rank);
  if (schedule.name.rfind("csv:", 0) == 0) label += " (row " + std::to_string(rank + 1) + ")";
  return label;
}

// What every simulate() error starts with: the schedule, and the rank and action if any.
struct Where {
  const Schedule& schedule;
  std::string prefix() const { return "pipeline schedule " + schedule.name + ": "; }
  std::string at(int rank) const { return prefix() + rank_label(schedule, rank); }
  std::string at(int rank, const Action& action) const {
    return at(rank) + ", action " + action_name(action);
  }
};

bool cross_rank(const Schedule& schedule, int from_stage, int to_stage) {
  return schedule.rank_of(from_stage) != schedule.rank_of(to_stage);
}

void check_shape(const Schedule& schedule) {
  const Where where{schedule};
  const int pp = schedule.pp;
  TITAN_CHECK_INPUT(pp >= 1 && schedule.stages >= pp && schedule.stages % pp == 0 &&
                    schedule.microbatches >= 1)
      << where.prefix() << "needs pp >= 1, a whole number of stages per rank and microbatches "
      << ">= 1, got pp " << pp << ", " << schedule.stages << " stages, " << schedule.microbatches
      << " microbatches";
  TITAN_CHECK_INPUT(!schedule.v_placement || schedule.stages == 2 * pp)
      << where.prefix() << "V placement holds exactly 2 stages per rank, got " << schedule.stages
      << " stages for pp " << pp;
  TITAN_CHECK_INPUT(static_cast<int>(schedule.ranks.size()) == pp)
      << where.prefix() << schedule.ranks.size() << " rank lists, expected one per rank: " << pp;
}

// Each action's position in its rank's list, checking ranges, placement and duplicates
// (the data-parallel actions' duplicates are check_data_parallel's).
PassTable<int> index_actions(const Schedule& schedule) {
  const Where where{schedule};
  PassTable<int> position(schedule);
  for (int rank = 0; rank < schedule.pp; ++rank) {
    const std::vector<Action>& actions = schedule.ranks[rank];
    for (int i = 0; i < static_cast<int>(actions.size()); ++i) {
      const Action& a = actions[i];
      TITAN_CHECK_INPUT(a.stage >= 0 && a.stage < schedule.stages)
          << where.at(rank, a) << ": stage out of range; stages are 0.." << schedule.stages - 1;
      if (is_data_parallel(a.kind)) {
        TITAN_CHECK_INPUT(a.microbatch == -1)
            << where.at(rank, a) << ": has microbatch " << a.microbatch
            << "; a data-parallel action concerns the whole stage, its microbatch is -1";
      } else {
        TITAN_CHECK_INPUT(a.microbatch >= 0 && a.microbatch < schedule.microbatches)
            << where.at(rank, a) << ": microbatch out of range; microbatches are 0.."
            << schedule.microbatches - 1;
      }
      TITAN_CHECK_INPUT(schedule.rank_of(a.stage) == rank)
          << where.at(rank, a) << ": stage " << a.stage << " runs on rank "
          << schedule.rank_of(a.stage) << ", not rank " << rank;
      if (is_data_parallel(a.kind)) continue;
      int& slot = position(a.kind, a.stage, a.microbatch);
      TITAN_CHECK_INPUT(slot < 0) << where.at(rank, a) << ": runs twice (positions " << slot + 1
                                  << " and " << i + 1 << "); each action runs once";
      slot = i;
    }
  }
  return position;
}

// F once, and B once or I and W once, for every (stage, microbatch).
void check_every_pass_once(const Schedule& schedule, const PassTable<int>& position) {
  const Where where{schedule};
  for (int stage = 0; stage < schedule.stages; ++stage) {
    const std::string here = where.at(schedule.rank_of(stage)) + ": ";
    for (int mb = 0; mb < schedule.microbatches; ++mb) {
      auto name = [&](ActionKind kind) { return action_name(make(kind, stage, mb)); };
      const bool f = position(ActionKind::Forward, stage, mb) >= 0;
      const bool b = position(ActionKind::Backward, stage, mb) >= 0;
      const bool i = position(ActionKind::BackwardInput, stage, mb) >= 0;
      const bool w = position(ActionKind::BackwardWeight, stage, mb) >= 0;
      TITAN_CHECK_INPUT(f) << here << name(ActionKind::Forward)
                           << " is missing; every stage runs F once per microbatch";
      TITAN_CHECK_INPUT(!(b && (i || w)))
          << here << name(ActionKind::Backward) << " and "
          << name(i ? ActionKind::BackwardInput : ActionKind::BackwardWeight)
          << " both run; a backward is B, or I and W, once";
      TITAN_CHECK_INPUT(b || i || w)
          << here << name(ActionKind::Backward)
          << " is missing; every stage runs B (or I and W) once per microbatch";
      if (b) continue;
      TITAN_CHECK_INPUT(i) << here << name(ActionKind::BackwardInput) << " is missing; "
                           << name(ActionKind::BackwardWeight) << " needs I before it";
      TITAN_CHECK_INPUT(w) << here << name(ActionKind::BackwardWeight) << " is missing; "
                           << name(ActionKind::BackwardInput) << " needs W after it";
    }
  }
}

// Order on each rank: what an action needs from its own rank comes first; what it needs
// from another rank is received first when the list carries transfers, and each transfer
// has its partner.
void check_order(const Schedule& schedule, const PassTable<int>& position, bool has_transfers) {
  const Where where{schedule};
  const int stages = schedule.stages;
  for (int rank = 0; rank < schedule.pp; ++rank) {
    const std::vector<Action>& actions = schedule.ranks[rank];
    for (int i = 0; i < static_cast<int>(actions.size()); ++i) {
      const Action& a = actions[i];
      const int s = a.stage;
      const int mb = a.microbatch;
      const std::string here = where.at(rank, a);
      auto name = [&](ActionKind kind, int stage) { return action_name(make(kind, stage, mb)); };
      auto needs_before = [&](ActionKind kind, int stage, const char* rule) {
        const int at = position(kind, stage, mb);
        TITAN_CHECK_INPUT(at >= 0) << here << " needs " << name(kind, stage)
                                   << " before it, which the list lacks (" << rule << ")";
        TITAN_CHECK_INPUT(at < i)
            << here << " runs before " << name(kind, stage) << ", which it needs (" << rule << ")";
      };
      auto needs_after = [&](ActionKind kind, int stage, const char* rule) {
        TITAN_CHECK_INPUT(position(kind, stage, mb) > i)
            << here << " runs after " << name(kind, stage) << ", which needs it first (" << rule
            << ")";
      };
      auto needs_partner = [&](ActionKind kind, int stage, const char* what) {
        TITAN_CHECK_INPUT(position(kind, stage, mb) >= 0)
            << here << ": " << what << " without " << name(kind, stage) << " on rank "
            << schedule.rank_of(stage) << "; every send needs its receive and the reverse";
      };
      auto needs_peer = [&](bool peer_elsewhere, const char* what) {
        TITAN_CHECK_INPUT(peer_elsewhere)
            << here << ": no stage on another rank " << what << " (adjacent stages on one rank "
            << "hand over in memory; the first stage receives no activation and sends no "
            << "gradient, the last the reverse)";
      };
      switch (a.kind) {
        case ActionKind::Forward:
          if (s > 0 && !cross_rank(schedule, s - 1, s)) {
            needs_before(ActionKind::Forward, s - 1, "F of stage s-1 before F of s");
          } else if (s > 0 && has_transfers) {
            needs_before(ActionKind::RecvActivation, s,
                         "a forward receives its input from another rank first");
          }
          break;
        case ActionKind::Backward:
        case ActionKind::BackwardInput:
          needs_before(ActionKind::Forward, s, "F before B or I");
          if (s + 1 < stages && !cross_rank(schedule, s + 1, s)) {
            needs_before(position.backward_input_kind(s + 1, mb), s + 1,
                         "B or I of stage s+1 before B or I of s");
          } else if (s + 1 < stages && has_transfers) {
            needs_before(ActionKind::RecvGradient, s,
                         "a backward receives its gradient from another rank first");
          }
          break;
        case ActionKind::BackwardWeight:
          needs_before(ActionKind::BackwardInput, s, "I before W");
          break;
        case ActionKind::SendActivation:
          needs_peer(s + 1 < stages && cross_rank(schedule, s, s + 1), "takes this activation");
          needs_before(ActionKind::Forward, s, "F before its send");
          needs_partner(ActionKind::RecvActivation, s + 1, "a send");
          break;
        case ActionKind::RecvActivation:
          needs_peer(s > 0 && cross_rank(schedule, s - 1, s), "sends this activation");
          needs_partner(ActionKind::SendActivation, s - 1, "a receive");
          needs_after(ActionKind::Forward, s, "receive before F");
          break;
        case ActionKind::SendGradient:
          needs_peer(s > 0 && cross_rank(schedule, s - 1, s), "takes this gradient");
          needs_before(position.backward_input_kind(s, mb), s, "B or I before its send");
          needs_partner(ActionKind::RecvGradient, s - 1, "a send");
          break;
        case ActionKind::RecvGradient:
          needs_peer(s + 1 < stages && cross_rank(schedule, s, s + 1), "sends this gradient");
          needs_partner(ActionKind::SendGradient, s + 1, "a receive");
          needs_after(position.backward_input_kind(s, mb), s, "receive before B or I");
          break;
        case ActionKind::Unshard:
        case ActionKind::ReduceGrad:
        case ActionKind::Reshard: break;  // check_data_parallel
      }
    }
  }
}

// The data-parallel actions (optional per stage): at most one of each kind per stage,
// Unshard before every action of its stage, ReduceGrad after every B and W of its stage and
// no compute of the stage after it (it freed the gathered values), Reshard after every F of
// its stage. index_actions has checked that each sits on its stage's rank.
void check_data_parallel(const Schedule& schedule) {
  const Where where{schedule};
  constexpr int kUnshard = 0, kReduceGrad = 1, kReshard = 2;
  auto slot_of = [](ActionKind kind) {
    return kind == ActionKind::Unshard ? kUnshard
                                       : kind == ActionKind::ReduceGrad ? kReduceGrad : kReshard;
  };
  // Per stage and data-parallel kind: the position in the stage's rank's list, or -1.
  std::vector<std::array<int, 3>> position(schedule.stages, {-1, -1, -1});
  for (int rank = 0; rank < schedule.pp; ++rank) {
    const std::vector<Action>& actions = schedule.ranks[rank];
    for (int i = 0; i < static_cast<int>(actions.size()); ++i) {
      const Action& a = actions[i];
      if (!is_data_parallel(a.kind)) continue;
      int& slot = position[a.stage][slot_of(a.kind)];
      TITAN_CHECK_INPUT(slot < 0)
          << where.at(rank, a) << ": runs twice (positions " << slot + 1 << " and " << i + 1
          << "); a stage has at most one UNSHARD, one REDUCE_GRAD and one RESHARD per step";
      slot = i;
    }
  }
  for (int rank = 0; rank < schedule.pp; ++rank) {
    const std::vector<Action>& actions = schedule.ranks[rank];
    for (int i = 0; i < static_cast<int>(actions.size()); ++i) {
      const Action& a = actions[i];
      const std::array<int, 3>& at = position[a.stage];
      const std::string here = where.at(rank, a);
      auto name = [&](ActionKind kind) { return action_name(make(kind, a.stage, -1)); };
      if (a.kind != ActionKind::Unshard && at[kUnshard] > i) {
        TITAN_FAIL_INPUT() << here << " runs before " << name(ActionKind::Unshard)
                           << ", which it needs (UNSHARD before every action of its stage)";
      }
      const bool after_reduce = at[kReduceGrad] >= 0 && at[kReduceGrad] < i;
      if (after_reduce &&
          (a.kind == ActionKind::Backward || a.kind == ActionKind::BackwardWeight)) {
        TITAN_FAIL_INPUT() << here << " runs after " << name(ActionKind::ReduceGrad)
                           << ", which needs it first (REDUCE_GRAD after every B and W of its "
                           << "stage)";
      }
      if (a.kind == ActionKind::Forward && at[kReshard] >= 0 && at[kReshard] < i) {
        TITAN_FAIL_INPUT() << here << " runs after " << name(ActionKind::Reshard)
                           << ", which needs it first (RESHARD after every F of its stage)";
      }
      if (after_reduce && is_compute(a.kind)) {
        TITAN_FAIL_INPUT() << here << " runs after " << name(ActionKind::ReduceGrad)
                           << ", which freed the stage's gathered values (a stage computes "
                           << "nothing after its REDUCE_GRAD)";
      }
    }
  }
}

// Runs the lists: an action starts when its rank is free and what it needs from another
// rank is there. Those times depend only on actions already run, so the sweep order does
// not change them. Fills start and duration.
void run_timeline(const Schedule& schedule, const PassTable<int>& position, bool has_transfers,
                  ScheduleReport& report) {
  const int pp = schedule.pp;
  PassTable<int64_t> finish(schedule);
  // What an action waits for on another rank; nullopt when nothing.
  struct Wait {
    Action action;
    int64_t ready = -1;  // -1: not run yet
  };
  auto wait_of = [&](const Action& a) -> std::optional<Wait> {
    const int s = a.stage;
    const int mb = a.microbatch;
    switch (a.kind) {
      case ActionKind::Forward:
        if (has_transfers || s == 0 || !cross_rank(schedule, s - 1, s)) return std::nullopt;
        return Wait{make(ActionKind::Forward, s - 1, mb), finish(ActionKind::Forward, s - 1, mb)};
      case ActionKind::Backward:
      case ActionKind::BackwardInput:
        if (has_transfers || s + 1 == schedule.stages || !cross_rank(schedule, s + 1, s)) {
          return std::nullopt;
        }
        return Wait{make(position.backward_input_kind(s + 1, mb), s + 1, mb),
                    finish.backward_input(s + 1, mb)};
      case ActionKind::RecvActivation:
        return Wait{make(ActionKind::SendActivation, s - 1, mb),
                    finish(ActionKind::SendActivation, s - 1, mb)};
      case ActionKind::RecvGradient:
        return Wait{make(ActionKind::SendGradient, s + 1, mb),
                    finish(ActionKind::SendGradient, s + 1, mb)};
      default: return std::nullopt;
    }
  };
  report.start.assign(pp, {});
  report.duration.assign(pp, {});
  std::vector<size_t> next(pp, 0);
  std::vector<int64_t> clock(pp, 0);
  size_t remaining = 0;
  for (const std::vector<Action>& actions : schedule.ranks) remaining += actions.size();
  while (remaining > 0) {
    bool progress = false;
    for (int rank = 0; rank < pp; ++rank) {
      const std::vector<Action>& actions = schedule.ranks[rank];
      while (next[rank] < actions.size()) {
        const Action& a = actions[next[rank]];
        int64_t start = clock[rank];
        if (const std::optional<Wait> wait = wait_of(a)) {
          if (wait->ready < 0) break;  // another rank has not produced it yet
          start = std::max(start, wait->ready);
        }
        report.start[rank].push_back(start);
        report.duration[rank].push_back(compute_duration(a.kind));
        clock[rank] = start + compute_duration(a.kind);
        if (!is_data_parallel(a.kind)) finish(a.kind, a.stage, a.microbatch) = clock[rank];
        ++next[rank];
        --remaining;
        progress = true;
      }
    }
    if (progress) continue;
    std::ostringstream stuck;
    for (int rank = 0; rank < pp; ++rank) {
      if (next[rank] == schedule.ranks[rank].size()) continue;
      const Action& a = schedule.ranks[rank][next[rank]];
      const Action awaited = wait_of(a)->action;
      stuck << (stuck.tellp() > 0 ? "; " : "") << rank_label(schedule, rank) << " waits at "
            << action_name(a) << " for " << action_name(awaited) << " on rank "
            << schedule.rank_of(awaited.stage);
    }
    TITAN_FAIL_INPUT() << Where{schedule}.prefix() << "the ranks deadlock: " << stuck.str()
                       << " (each rank runs its list in order)";
  }
}

// Makespan, idle time and the activations each rank holds at most.
void measure(const Schedule& schedule, ScheduleReport& report) {
  const int pp = schedule.pp;
  std::vector<int64_t> busy(pp, 0);
  report.makespan = 0;
  for (int rank = 0; rank < pp; ++rank) {
    for (size_t i = 0; i < schedule.ranks[rank].size(); ++i) {
      busy[rank] += report.duration[rank][i];
      report.makespan = std::max(report.makespan, report.start[rank][i] + report.duration[rank][i]);
    }
  }
  report.idle_fraction.assign(pp, 0.0);
  int64_t idle_total = 0;
  for (int rank = 0; rank < pp; ++rank) {
    idle_total += report.makespan - busy[rank];
    if (report.makespan > 0) {
      report.idle_fraction[rank] =
          static_cast<double>(report.makespan - busy[rank]) / report.makespan;
    }
  }
  report.bubble_fraction =
      report.makespan > 0 ? static_cast<double>(idle_total) / (pp * report.makespan) : 0.0;

  // A forward stashes activations; its B, or its W (the last pass to read them), frees them.
  report.peak_in_flight.assign(pp, 0);
  for (int rank = 0; rank < pp; ++rank) {
    int held = 0;
    for (const Action& a : schedule.ranks[rank]) {
      if (a.kind == ActionKind::Forward) {
        report.peak_in_flight[rank] = std::max(report.peak_in_flight[rank], ++held);
      } else if (a.kind == ActionKind::Backward || a.kind == ActionKind::BackwardWeight) {
        --held;
      }
    }
  }
}

std::string percent(double fraction) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << 100.0 * fraction << "%";
  return os.str();
}

std::string xml_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

ScheduleReport simulate(const Schedule& schedule) {
  check_shape(schedule);
  const PassTable<int> position = index_actions(schedule);
  check_every_pass_once(schedule, position);
  bool has_transfers = false;
  for (const std::vector<Action>& actions : schedule.ranks) {
    for (const Action& a : actions) {
      has_transfers = has_transfers || (!is_compute(a.kind) && !is_data_parallel(a.kind));
    }
  }
  check_order(schedule, position, has_transfers);
  check_data_parallel(schedule);
  ScheduleReport report;
  run_timeline(schedule, position, has_transfers, report);
  measure(schedule, report);
  return report;
}

double textbook_bubble(int pp, int microbatches) {
  return static_cast<double>(pp - 1) / (microbatches + pp - 1);
}

namespace {

void check_report_matches(const Schedule& schedule, const ScheduleReport& report) {
  TITAN_CHECK(report.start.size() == schedule.ranks.size() &&
              report.duration.size() == schedule.ranks.size())
      << "the report is of another schedule than " << schedule.name;
  for (size_t rank = 0; rank < schedule.ranks.size(); ++rank) {
    TITAN_CHECK(report.start[rank].size() == schedule.ranks[rank].size() &&
                report.duration[rank].size() == schedule.ranks[rank].size())
        << "the report is of another schedule than " << schedule.name << " (rank " << rank << ")";
  }
}

std::string summary_line(const Schedule& schedule, const ScheduleReport& report) {
  std::ostringstream os;
  os << schedule.name << ": pp " << schedule.pp << ", " << schedule.stages << " stages ("
     << schedule.stages_per_rank() << " per rank), " << schedule.microbatches
     << " microbatches, makespan " << report.makespan << ", bubble "
     << percent(report.bubble_fraction);
  return os.str();
}

const char* pass_colour(ActionKind kind) {
  switch (kind) {
    case ActionKind::Forward: return "#4e79a7";
    case ActionKind::Backward: return "#59a14f";
    case ActionKind::BackwardInput: return "#f28e2b";
    case ActionKind::BackwardWeight: return "#b07aa1";
    default: return "#999999";
  }
}

const char* pass_letter(ActionKind kind) {
  switch (kind) {
    case ActionKind::Forward: return "F";
    case ActionKind::Backward: return "B";
    case ActionKind::BackwardInput: return "I";
    case ActionKind::BackwardWeight: return "W";
    default: return "?";
  }
}

}  // namespace

std::string render_text(const Schedule& schedule, const ScheduleReport& report) {
  check_report_matches(schedule, report);
  std::ostringstream os;
  os << summary_line(schedule, report) << "\n";
  for (size_t rank = 0; rank < schedule.ranks.size(); ++rank) {
    os << "rank " << rank << " (idle " << percent(report.idle_fraction[rank]) << "):";
    for (size_t i = 0; i < schedule.ranks[rank].size(); ++i) {
      const Action& a = schedule.ranks[rank][i];
      if (is_compute(a.kind)) os << " " << action_name(a) << "@" << report.start[rank][i];
    }
    os << "\n";
  }
  return os.str();
}

std::string render_svg(const Schedule& schedule, const ScheduleReport& report) {
  check_report_matches(schedule, report);
  constexpr int kUnit = 28;  // pixels per time unit (one forward)
  constexpr int kLeft = 64;  // room for "rank N"
  constexpr int kTop = 34;   // room for the title
  constexpr int kRowHeight = 26;
  constexpr int kBoxHeight = 20;
  const int pp = schedule.pp;
  const std::string title = summary_line(schedule, report);
  const int legend_y = kTop + pp * kRowHeight + 10;
  const int width = std::max(kLeft + static_cast<int>(report.makespan) * kUnit + 16,
                             static_cast<int>(title.size()) * 8 + 20);
  const int height = legend_y + 26;
  const bool several_stages = schedule.stages_per_rank() > 1;

  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" font-family=\"monospace\" font-size=\"10\">\n";
  os << "<text x=\"8\" y=\"20\" font-size=\"13\">" << xml_escape(title) << "</text>\n";
  bool used[4] = {false, false, false, false};
  for (int rank = 0; rank < pp; ++rank) {
    const int row_y = kTop + rank * kRowHeight;
    os << "<text x=\"8\" y=\"" << row_y + 14 << "\">rank " << rank << "</text>\n";
    for (size_t i = 0; i < schedule.ranks[rank].size(); ++i) {
      const Action& a = schedule.ranks[rank][i];
      if (!is_compute(a.kind)) continue;
      used[static_cast<int>(a.kind)] = true;
      const int64_t start = report.start[rank][i];
      const int64_t x = kLeft + start * kUnit;
      const int64_t box_width = report.duration[rank][i] * kUnit - 1;
      const std::string label =
          several_stages ? "s" + std::to_string(a.stage) + ":" + std::to_string(a.microbatch)
                         : std::to_string(a.microbatch);
      os << "<rect class=\"action " << pass_letter(a.kind) << "\" x=\"" << x << "\" y=\"" << row_y
         << "\" width=\"" << box_width << "\" height=\"" << kBoxHeight << "\" fill=\""
         << pass_colour(a.kind) << "\"><title>" << action_name(a) << " t=" << start << ".."
         << start + report.duration[rank][i] << "</title></rect>\n";
      os << "<text x=\"" << x + box_width / 2 << "\" y=\"" << row_y + 14
         << "\" text-anchor=\"middle\" fill=\"white\">" << label << "</text>\n";
    }
  }
  const char* legend_names[4] = {"F forward", "B backward", "I input grad", "W weight grad"};
  int legend_x = kLeft;
  for (int kind = 0; kind < 4; ++kind) {
    if (!used[kind]) continue;
    os << "<rect class=\"legend\" x=\"" << legend_x << "\" y=\"" << legend_y
       << "\" width=\"12\" height=\"12\" fill=\"" << pass_colour(static_cast<ActionKind>(kind))
       << "\"/>\n";
    os << "<text x=\"" << legend_x + 16 << "\" y=\"" << legend_y + 10 << "\">" << legend_names[kind]
       << "</text>\n";
    legend_x += 120;
  }
  os << "</svg>\n";
  return os.str();
}

}  // namespace titan::distributed

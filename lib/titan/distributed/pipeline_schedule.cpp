// Pipeline schedules as data: the types' functions, the generators (PyTorch's orders,
// torch/distributed/pipelining/schedules.py) and their request checks, the CSV reader and
// writer, communication lowering and the data-parallel actions. The simulator and
// renderers are in pipeline_simulator.cpp. See pipeline_schedule.h for the contract.
#include "titan/distributed/pipeline_schedule.h"

#include <algorithm>
#include <cctype>
#include <deque>
#include <map>
#include <optional>
#include <string_view>
#include <utility>

#include "titan/core/error.h"
#include "titan/distributed/pipeline_schedule_internal.h"

namespace titan::distributed {
namespace {

using config::PipelineSchedule;
using detail::make;

constexpr const char* kScheduleKey = "parallelism.pipeline_parallel_schedule: ";
constexpr const char* kCsvKey = "parallelism.pipeline_parallel_schedule_csv ";

std::string schedule_name(PipelineSchedule kind) {
  return std::string(config::choice_name(kind));
}

// ---------------------------------------------------------------------------------------
// Generators. Each returns ranks[r] = rank r's compute actions in order.

using RankLists = std::vector<std::vector<Action>>;

// Fill and drain: every forward, then every backward, microbatch order.
RankLists gpipe_order(int pp, int microbatches) {
  RankLists ranks(pp);
  for (int rank = 0; rank < pp; ++rank) {
    for (int mb = 0; mb < microbatches; ++mb) {
      ranks[rank].push_back(make(ActionKind::Forward, rank, mb));
    }
    for (int mb = 0; mb < microbatches; ++mb) {
      ranks[rank].push_back(make(ActionKind::Backward, rank, mb));
    }
  }
  return ranks;
}

// Schedule1F1B: pp - 1 - rank warmup forwards, then F,B pairs, then the remaining B's. A rank
// never holds more than pp - rank forwarded microbatches.
RankLists one_forward_one_backward_order(int pp, int microbatches) {
  RankLists ranks(pp);
  for (int rank = 0; rank < pp; ++rank) {
    std::vector<Action>& actions = ranks[rank];
    const int warmup = std::min(microbatches, pp - 1 - rank);
    int forwards = 0;
    int backwards = 0;
    while (forwards < warmup) actions.push_back(make(ActionKind::Forward, rank, forwards++));
    while (forwards < microbatches) {
      actions.push_back(make(ActionKind::Forward, rank, forwards++));
      actions.push_back(make(ActionKind::Backward, rank, backwards++));
    }
    while (backwards < microbatches) {
      actions.push_back(make(ActionKind::Backward, rank, backwards++));
    }
  }
  return ranks;
}

// PyTorch's flexible rounds: microbatches run in rounds of `per_round`, each round visiting
// every local stage before the next round starts.
struct InterleavedRounds {
  int rounds = 1;
  int per_round = 1;
};
InterleavedRounds interleaved_rounds(int pp, int microbatches) {
  InterleavedRounds r;
  r.rounds = std::max(1, microbatches / pp);
  r.per_round = microbatches / r.rounds;
  return r;
}

// The k-th forward (or backward) op of a rank in the interleaved orders: which local stage
// (counted from the first for forwards) and which microbatch.
int interleaved_local_stage(int op, int per_round, int local_stages) {
  return (op / per_round) % local_stages;
}
int interleaved_microbatch(int op, int per_round, int local_stages) {
  return (op / (per_round * local_stages)) * per_round + op % per_round;
}

// ScheduleInterleaved1F1B (zero_bubble false) and ScheduleInterleavedZeroBubble (true). Warmup
// forwards fill the pipeline depth-first, then one forward and one backward alternate, then
// the remaining backwards. The zero-bubble variant splits each backward into I and W, warms
// up one op less per hop (I is half a B), and defers W by `rank` backwards so the ranks that
// idle longest at the end of the step fill that idle time with weight gradients.
RankLists interleaved_order(int pp, int local_stages, int microbatches, bool zero_bubble) {
  const InterleavedRounds rounds = interleaved_rounds(pp, microbatches);
  const int per_round = rounds.per_round;
  const int hop_factor = zero_bubble ? 1 : 2;
  const int total = local_stages * microbatches;
  const ActionKind backward_kind = zero_bubble ? ActionKind::BackwardInput : ActionKind::Backward;
  RankLists ranks(pp);
  for (int rank = 0; rank < pp; ++rank) {
    std::vector<Action>& actions = ranks[rank];
    const int warmup =
        std::min((local_stages - 1) * per_round + hop_factor * (pp - 1 - rank), total);
    const int deferred_weights = rank;
    int forwards = 0;
    int backwards = 0;
    std::deque<Action> pending_weights;
    auto forward = [&] {
      const int local = interleaved_local_stage(forwards, per_round, local_stages);
      const int mb = interleaved_microbatch(forwards, per_round, local_stages);
      actions.push_back(make(ActionKind::Forward, local * pp + rank, mb));
      ++forwards;
    };
    auto backward = [&] {
      const int local =
          local_stages - 1 - interleaved_local_stage(backwards, per_round, local_stages);
      const int mb = interleaved_microbatch(backwards, per_round, local_stages);
      const int stage = local * pp + rank;
      actions.push_back(make(backward_kind, stage, mb));
      if (zero_bubble) {
        pending_weights.push_back(make(ActionKind::BackwardWeight, stage, mb));
        if (backwards >= deferred_weights) {
          actions.push_back(pending_weights.front());
          pending_weights.pop_front();
        }
      }
      ++backwards;
    };
    while (forwards < warmup) forward();
    while (forwards < total) {
      forward();
      backward();
    }
    while (backwards < total) backward();
    for (const Action& weight : pending_weights) actions.push_back(weight);
  }
  return ranks;
}

// ScheduleLoopedBFS: breadth first. Each local stage forwards every microbatch before the
// next; backwards run the local stages in reverse, latest microbatch first (it is the one
// whose gradient arrives first).
RankLists looped_bfs_order(int pp, int local_stages, int microbatches) {
  RankLists ranks(pp);
  for (int rank = 0; rank < pp; ++rank) {
    for (int local = 0; local < local_stages; ++local) {
      for (int mb = 0; mb < microbatches; ++mb) {
        ranks[rank].push_back(make(ActionKind::Forward, local * pp + rank, mb));
      }
    }
    for (int local = local_stages - 1; local >= 0; --local) {
      for (int mb = microbatches - 1; mb >= 0; --mb) {
        ranks[rank].push_back(make(ActionKind::Backward, local * pp + rank, mb));
      }
    }
  }
  return ranks;
}

// ScheduleZBVZeroBubble (ZB-V, arXiv 2401.10241 section 6). Rank r holds chunk 0 (stage r)
// and chunk 1 (stage 2 pp - 1 - r). Warmup: 2 (pp - r) - 1 chunk-0 forwards, r pairs of
// chunk-1 and chunk-0 forwards, pp - r chunk-1 F,I,W triples; steady state F,I,W on chunk 0
// then chunk 1; cooldown I's with the W's left to fill the tail. The order is written for at
// least 2 pp - 1 microbatches; with fewer, the missing microbatches' actions are dropped,
// which keeps every remaining dependency (and so the order stays deadlock-free).
RankLists zbv_order(int pp, int microbatches) {
  const int padded = std::max(2 * pp - 1, microbatches);
  const int stages = 2 * pp;
  RankLists ranks(pp);
  for (int rank = 0; rank < pp; ++rank) {
    const int chunk0 = rank;
    const int chunk1 = stages - 1 - rank;
    std::vector<Action> actions;
    int f0 = 0, f1 = 0, b0 = 0, b1 = 0;
    auto forward = [&](int stage, int& count) {
      actions.push_back(make(ActionKind::Forward, stage, count++));
    };
    auto input_and_weight = [&](int stage, int& count) {
      actions.push_back(make(ActionKind::BackwardInput, stage, count));
      actions.push_back(make(ActionKind::BackwardWeight, stage, count));
      ++count;
    };
    for (int i = 0; i < 2 * (pp - rank) - 1; ++i) forward(chunk0, f0);
    for (int i = 0; i < rank; ++i) {
      forward(chunk1, f1);
      forward(chunk0, f0);
    }
    for (int i = 0; i < pp - rank; ++i) {
      forward(chunk1, f1);
      input_and_weight(chunk1, b1);
    }
    while (f1 < f0 || f0 < padded) {
      if (f0 < padded) forward(chunk0, f0);
      input_and_weight(chunk0, b0);
      forward(chunk1, f1);
      input_and_weight(chunk1, b1);
    }
    int w0 = b0, w1 = b1;
    for (int i = 0; i < rank; ++i) {
      actions.push_back(make(ActionKind::BackwardInput, chunk0, b0++));
      actions.push_back(make(ActionKind::BackwardInput, chunk1, b1++));
    }
    for (int i = 0; i < pp - rank; ++i) {
      actions.push_back(make(ActionKind::BackwardInput, chunk0, b0++));
      actions.push_back(make(ActionKind::BackwardWeight, chunk0, w0++));
    }
    while (w1 < b1) actions.push_back(make(ActionKind::BackwardWeight, chunk1, w1++));
    while (w0 < b0) actions.push_back(make(ActionKind::BackwardWeight, chunk0, w0++));
    TITAN_CHECK(f0 == padded && f1 == padded && b0 == padded && b1 == padded)
        << "ZBV order for pp " << pp << ": counts " << f0 << " " << f1 << " " << b0 << " " << b1;
    for (const Action& action : actions) {
      if (action.microbatch < microbatches) ranks[rank].push_back(action);
    }
  }
  return ranks;
}

// ScheduleDualPipeV (DeepSeek's DualPipe folded into a V). PyTorch's overlapped F+B pairs
// (OVERLAP_F_B) run here as the forward then the backward, as PyTorch's runtime runs them
// without a custom overlap function. Steps, rank r of pp, chunk 0 = stage r, chunk 1 =
// stage 2 pp - 1 - r:
//   1 F0 x 2 (pp - r - 1)   2 (F0 F1) x (r + 1)   3 (I1 W F1) x (pp - r - 1)
//   4 (F0 B1 F1 B0) x (m - 2 pp + r + 1)   5 (B1 F1 B0) x (pp - r - 1)
//   6 (B1 B0) x (r + 1), switching to I halfway   7 (W I0) x (pp - r - 1)   8 W x (r + 1)
// where W is the oldest pending weight gradient.
RankLists dualpipev_order(int pp, int microbatches) {
  const int stages = 2 * pp;
  RankLists ranks(pp);
  for (int rank = 0; rank < pp; ++rank) {
    const int chunk0 = rank;
    const int chunk1 = stages - 1 - rank;
    std::vector<Action>& actions = ranks[rank];
    // The n-th forward (backward) of a stage is microbatch n.
    std::vector<int> forwards(stages, 0), backwards(stages, 0);
    std::deque<Action> pending_weights;
    auto forward = [&](int stage) {
      actions.push_back(make(ActionKind::Forward, stage, forwards[stage]++));
    };
    // A full backward, or its input half with the weight half queued.
    auto backward = [&](int stage, bool split) {
      const int mb = backwards[stage]++;
      if (split) {
        actions.push_back(make(ActionKind::BackwardInput, stage, mb));
        pending_weights.push_back(make(ActionKind::BackwardWeight, stage, mb));
      } else {
        actions.push_back(make(ActionKind::Backward, stage, mb));
      }
    };
    auto oldest_weight = [&] {
      if (pending_weights.empty()) return;
      actions.push_back(pending_weights.front());
      pending_weights.pop_front();
    };
    for (int i = 0; i < 2 * (pp - rank - 1); ++i) forward(chunk0);
    for (int i = 0; i < rank + 1; ++i) {
      forward(chunk0);
      forward(chunk1);
    }
    for (int i = 0; i < pp - rank - 1; ++i) {
      backward(chunk1, true);
      oldest_weight();
      forward(chunk1);
    }
    for (int i = 0; i < microbatches - 2 * pp + rank + 1; ++i) {
      forward(chunk0);
      backward(chunk1, false);
      forward(chunk1);
      backward(chunk0, false);
    }
    for (int i = 0; i < pp - rank - 1; ++i) {
      backward(chunk1, false);
      forward(chunk1);
      backward(chunk0, false);
    }
    // The second half of the last backwards split off W: odd ranks switch before chunk 1's,
    // even ranks after it, as in PyTorch.
    bool split = false;
    const int last_backwards = rank + 1;
    for (int i = 0; i < last_backwards; ++i) {
      if (i == last_backwards / 2 && rank % 2 == 1) split = true;
      backward(chunk1, split);
      if (i == last_backwards / 2 && rank % 2 == 0) split = true;
      backward(chunk0, split);
    }
    for (int i = 0; i < pp - rank - 1; ++i) {
      oldest_weight();
      backward(chunk0, split);
    }
    while (!pending_weights.empty()) oldest_weight();
    TITAN_CHECK(forwards[chunk0] == microbatches && forwards[chunk1] == microbatches &&
                backwards[chunk0] == microbatches && backwards[chunk1] == microbatches)
        << "DualPipeV order for pp " << pp << ", " << microbatches << " microbatches";
  }
  return ranks;
}

// The interleaved schedules run whole rounds only.
bool interleaved_accepts(int pp, int microbatches) {
  return microbatches % interleaved_rounds(pp, microbatches).rounds == 0;
}

void check_generator_request(PipelineSchedule kind, int pp, int stages_per_rank, int microbatches) {
  const std::string name = schedule_name(kind);
  TITAN_CHECK_INPUT(kind != PipelineSchedule::PipelineScheduleSingle &&
                    kind != PipelineSchedule::PipelineScheduleMulti)
      << kScheduleKey << name << " reads its order from "
      << "parallelism.pipeline_parallel_schedule_csv; set that file, or pick a generated "
      << "schedule (GPipe, 1F1B, Interleaved1F1B, LoopedBFS, InterleavedZeroBubble, "
      << "ZBVZeroBubble, DualPipeV)";
  TITAN_CHECK_INPUT(pp >= 1) << kScheduleKey << name << " needs pipeline_parallel_degree >= 1, got "
                             << pp;
  TITAN_CHECK_INPUT(microbatches >= 1)
      << kScheduleKey << name << " needs at least 1 microbatch, got " << microbatches
      << "; raise training.local_batch_size / pipeline_parallel_microbatch_size to 1 or more";
  if (is_single_stage(kind)) {
    TITAN_CHECK_INPUT(stages_per_rank == 1)
        << kScheduleKey << name << " runs exactly 1 stage per rank, got " << stages_per_rank
        << "; use 1, or a multi-stage schedule such as Interleaved1F1B for " << stages_per_rank;
  } else if (kind == PipelineSchedule::ZBVZeroBubble || kind == PipelineSchedule::DualPipeV) {
    TITAN_CHECK_INPUT(stages_per_rank == 2)
        << kScheduleKey << name << " runs exactly 2 stages per rank (V placement), got "
        << stages_per_rank << "; use 2, or Interleaved1F1B / InterleavedZeroBubble for "
        << stages_per_rank;
  } else {
    TITAN_CHECK_INPUT(stages_per_rank >= 2)
        << kScheduleKey << name << " needs at least 2 stages per rank, got " << stages_per_rank
        << "; use 2 or more, or 1F1B for 1";
  }
  if (kind == PipelineSchedule::OneForwardOneBackward) {
    TITAN_CHECK_INPUT(microbatches >= pp)
        << kScheduleKey << name << " needs at least pp = " << pp << " microbatches, got "
        << microbatches << "; raise training.local_batch_size / "
        << "pipeline_parallel_microbatch_size to " << pp << " or more";
  }
  if (kind == PipelineSchedule::Interleaved1F1B ||
      kind == PipelineSchedule::InterleavedZeroBubble) {
    if (!interleaved_accepts(pp, microbatches)) {
      int below = microbatches - 1;
      while (!interleaved_accepts(pp, below)) --below;  // stops by pp: one round
      int above = microbatches + 1;
      while (!interleaved_accepts(pp, above)) ++above;  // stops by a multiple of pp
      TITAN_FAIL_INPUT() << kScheduleKey << name
                         << " needs the microbatch count to be a multiple of its rounds, "
                         << "max(1, microbatches / pp) = "
                         << interleaved_rounds(pp, microbatches).rounds << ", got " << microbatches
                         << " microbatches with pp = " << pp << "; use " << below << " or " << above
                         << " microbatches";
    }
  }
  if (kind == PipelineSchedule::DualPipeV) {
    TITAN_CHECK_INPUT(microbatches >= 2 * pp)
        << kScheduleKey << name << " needs at least 2 x pp = " << 2 * pp << " microbatches, got "
        << microbatches << "; raise training.local_batch_size / "
        << "pipeline_parallel_microbatch_size to " << 2 * pp << " or more";
  }
}

// ---------------------------------------------------------------------------------------
// CSV cells: <stage><kind><microbatch>, or <stage><kind> for the data-parallel kinds,
// PyTorch's _Action.from_str spelling.

struct KindSpelling {
  std::string_view text;
  ActionKind kind;
};
constexpr KindSpelling kKindSpellings[] = {
    {"F", ActionKind::Forward},
    {"FORWARD", ActionKind::Forward},
    {"B", ActionKind::Backward},
    {"FULL_BACKWARD", ActionKind::Backward},
    {"I", ActionKind::BackwardInput},
    {"BACKWARD_INPUT", ActionKind::BackwardInput},
    {"W", ActionKind::BackwardWeight},
    {"BACKWARD_WEIGHT", ActionKind::BackwardWeight},
    {"SEND_F", ActionKind::SendActivation},
    {"RECV_F", ActionKind::RecvActivation},
    {"SEND_B", ActionKind::SendGradient},
    {"RECV_B", ActionKind::RecvGradient},
    {"UNSHARD", ActionKind::Unshard},
    {"REDUCE_GRAD", ActionKind::ReduceGrad},
    {"RESHARD", ActionKind::Reshard},
};

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

// Reads leading digits as a number; nullopt when there are none or too many to be an index.
std::optional<int> take_number(std::string_view& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  if (digits == 0 || digits > 9) return std::nullopt;
  int value = 0;
  for (size_t i = 0; i < digits; ++i) value = value * 10 + (text[i] - '0');
  text.remove_prefix(digits);
  return value;
}

// One cell's actions (an OVERLAP_F_B cell holds several, a blank cell none), or nullopt
// when the cell does not parse.
std::optional<std::vector<Action>> parse_cell(std::string_view cell) {
  cell = trim(cell);
  if (cell.size() >= 2 && cell.front() == '"' && cell.back() == '"') {
    cell = trim(cell.substr(1, cell.size() - 2));
  }
  std::vector<Action> actions;
  if (cell.empty()) return actions;
  if (cell.front() == '(') {
    const size_t close = cell.find(')');
    if (close == std::string_view::npos || trim(cell.substr(close + 1)) != "OVERLAP_F_B") {
      return std::nullopt;
    }
    std::string_view inner = cell.substr(1, close - 1);
    while (!inner.empty()) {
      const size_t semicolon = inner.find(';');
      std::optional<std::vector<Action>> part = parse_cell(inner.substr(0, semicolon));
      if (!part) return std::nullopt;
      actions.insert(actions.end(), part->begin(), part->end());
      if (semicolon == std::string_view::npos) break;
      inner.remove_prefix(semicolon + 1);
    }
    return actions;
  }
  const std::optional<int> stage = take_number(cell);
  if (!stage) return std::nullopt;
  size_t letters = 0;
  while (letters < cell.size() &&
         (std::isupper(static_cast<unsigned char>(cell[letters])) || cell[letters] == '_')) {
    ++letters;
  }
  const std::string_view kind_text = cell.substr(0, letters);
  cell.remove_prefix(letters);
  for (const KindSpelling& spelling : kKindSpellings) {
    if (spelling.text != kind_text) continue;
    if (is_data_parallel(spelling.kind)) {
      if (!cell.empty()) return std::nullopt;  // a whole-stage action has no microbatch
      actions.push_back(make(spelling.kind, *stage, -1));
      return actions;
    }
    const std::optional<int> microbatch = take_number(cell);
    if (!microbatch || !cell.empty()) return std::nullopt;
    actions.push_back(make(spelling.kind, *stage, *microbatch));
    return actions;
  }
  return std::nullopt;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) break;
    text.remove_prefix(at + 1);
  }
  return parts;
}

// B or I: the pass that takes the gradient from the next stage and sends one on.
bool is_backward_input(ActionKind kind) {
  return kind == ActionKind::Backward || kind == ActionKind::BackwardInput;
}

}  // namespace

bool is_compute(ActionKind kind) {
  return kind == ActionKind::Forward || kind == ActionKind::Backward ||
         kind == ActionKind::BackwardInput || kind == ActionKind::BackwardWeight;
}

bool is_data_parallel(ActionKind kind) {
  return kind == ActionKind::Unshard || kind == ActionKind::ReduceGrad ||
         kind == ActionKind::Reshard;
}

std::string action_name(const Action& action) {
  const char* kind = "?";
  switch (action.kind) {
    case ActionKind::Forward: kind = "F"; break;
    case ActionKind::Backward: kind = "B"; break;
    case ActionKind::BackwardInput: kind = "I"; break;
    case ActionKind::BackwardWeight: kind = "W"; break;
    case ActionKind::SendActivation: kind = "SEND_F"; break;
    case ActionKind::RecvActivation: kind = "RECV_F"; break;
    case ActionKind::SendGradient: kind = "SEND_B"; break;
    case ActionKind::RecvGradient: kind = "RECV_B"; break;
    case ActionKind::Unshard: return std::to_string(action.stage) + "UNSHARD";
    case ActionKind::ReduceGrad: return std::to_string(action.stage) + "REDUCE_GRAD";
    case ActionKind::Reshard: return std::to_string(action.stage) + "RESHARD";
  }
  return std::to_string(action.stage) + kind + std::to_string(action.microbatch);
}

int Schedule::rank_of(int stage) const {
  TITAN_CHECK(stage >= 0 && stage < stages) << "stage " << stage << " of " << stages;
  if (v_placement) return stage < pp ? stage : 2 * pp - 1 - stage;
  return stage % pp;
}

std::vector<int> Schedule::stages_of(int rank) const {
  std::vector<int> held;
  for (int stage = 0; stage < stages; ++stage) {
    if (rank_of(stage) == rank) held.push_back(stage);
  }
  return held;
}

bool is_single_stage(config::PipelineSchedule kind) {
  return kind == PipelineSchedule::GPipe || kind == PipelineSchedule::OneForwardOneBackward ||
         kind == PipelineSchedule::PipelineScheduleSingle;
}

int default_stages_per_rank(config::PipelineSchedule kind) {
  return is_single_stage(kind) ? 1 : 2;
}

Schedule generate_schedule(config::PipelineSchedule kind, int pp, int stages_per_rank,
                           int microbatches) {
  check_generator_request(kind, pp, stages_per_rank, microbatches);
  Schedule schedule;
  schedule.name = schedule_name(kind);
  schedule.pp = pp;
  schedule.stages = pp * stages_per_rank;
  schedule.microbatches = microbatches;
  schedule.v_placement =
      kind == PipelineSchedule::ZBVZeroBubble || kind == PipelineSchedule::DualPipeV;
  switch (kind) {
    case PipelineSchedule::GPipe: schedule.ranks = gpipe_order(pp, microbatches); break;
    case PipelineSchedule::OneForwardOneBackward:
      schedule.ranks = one_forward_one_backward_order(pp, microbatches);
      break;
    case PipelineSchedule::Interleaved1F1B:
      schedule.ranks = interleaved_order(pp, stages_per_rank, microbatches, false);
      break;
    case PipelineSchedule::InterleavedZeroBubble:
      schedule.ranks = interleaved_order(pp, stages_per_rank, microbatches, true);
      break;
    case PipelineSchedule::LoopedBFS:
      schedule.ranks = looped_bfs_order(pp, stages_per_rank, microbatches);
      break;
    case PipelineSchedule::ZBVZeroBubble: schedule.ranks = zbv_order(pp, microbatches); break;
    case PipelineSchedule::DualPipeV: schedule.ranks = dualpipev_order(pp, microbatches); break;
    default: TITAN_FAIL() << "no generator for " << schedule.name;
  }
  return schedule;
}

Schedule read_schedule_csv(const std::string& text, const std::string& origin, int pp,
                           int stages_per_rank, int microbatches) {
  const std::string where = kCsvKey + origin;
  TITAN_CHECK_INPUT(pp >= 1 && stages_per_rank >= 1 && microbatches >= 1)
      << where << ": needs pp, stages per rank and microbatches >= 1, got " << pp << ", "
      << stages_per_rank << ", " << microbatches;
  std::vector<std::string_view> rows = split(text, '\n');
  for (std::string_view& row : rows) {
    if (!row.empty() && row.back() == '\r') row.remove_suffix(1);
  }
  while (!rows.empty() && trim(rows.back()).empty()) rows.pop_back();  // trailing newlines
  TITAN_CHECK_INPUT(static_cast<int>(rows.size()) == pp)
      << where << ": " << rows.size() << " rows, expected one per pipeline rank: " << pp
      << " (pipeline_parallel_degree)";

  Schedule schedule;
  schedule.name = "csv:" + origin;
  schedule.pp = pp;
  schedule.stages = pp * stages_per_rank;
  schedule.microbatches = microbatches;
  schedule.ranks.resize(pp);
  for (int rank = 0; rank < pp; ++rank) {
    const std::string row_where = where + " row " + std::to_string(rank + 1);
    const std::vector<std::string_view> cells = split(rows[rank], ',');
    for (size_t column = 0; column < cells.size(); ++column) {
      const std::optional<std::vector<Action>> actions = parse_cell(cells[column]);
      TITAN_CHECK_INPUT(actions.has_value())
          << row_where << ": cell " << column + 1 << " \"" << trim(cells[column])
          << "\" does not parse; cells are <stage><F|B|I|W><microbatch>, e.g. 2F5, or "
          << "<stage><UNSHARD|REDUCE_GRAD|RESHARD>, e.g. 2UNSHARD";
      for (const Action& action : *actions) {
        TITAN_CHECK_INPUT(action.stage < schedule.stages)
            << row_where << ": stage " << action.stage << " in " << action_name(action)
            << " is out of range; " << pp << " x " << stages_per_rank << " = " << schedule.stages
            << " stages are 0.." << schedule.stages - 1;
        TITAN_CHECK_INPUT(action.microbatch < microbatches)
            << row_where << ": microbatch " << action.microbatch << " in " << action_name(action)
            << " is out of range; microbatches are 0.." << microbatches - 1;
        TITAN_CHECK_INPUT(schedule.rank_of(action.stage) == rank)
            << row_where << ": stage " << action.stage << " is on rank "
            << schedule.rank_of(action.stage) << " (stage s runs on rank s mod pp), not rank "
            << rank;
        schedule.ranks[rank].push_back(action);
      }
    }
  }
  return schedule;
}

std::string write_schedule_csv(const Schedule& schedule) {
  std::string text;
  for (const std::vector<Action>& actions : schedule.ranks) {
    for (size_t i = 0; i < actions.size(); ++i) {
      if (i > 0) text += ',';
      text += action_name(actions[i]);
    }
    text += '\n';
  }
  return text;
}

void add_communication(Schedule& schedule) {
  for (int rank = 0; rank < static_cast<int>(schedule.ranks.size()); ++rank) {
    const std::vector<Action>& old_actions = schedule.ranks[rank];
    // Transfers already in the list stay where they are; only missing ones are added.
    auto present = [&](const Action& transfer) {
      return std::find(old_actions.begin(), old_actions.end(), transfer) != old_actions.end();
    };
    std::vector<Action> actions;
    for (const Action& action : old_actions) {
      const int s = action.stage;
      const bool has_previous = s > 0 && schedule.rank_of(s - 1) != schedule.rank_of(s);
      const bool has_next =
          s + 1 < schedule.stages && schedule.rank_of(s + 1) != schedule.rank_of(s);
      std::optional<Action> before, after;
      if (action.kind == ActionKind::Forward) {
        if (has_previous) before = make(ActionKind::RecvActivation, s, action.microbatch);
        if (has_next) after = make(ActionKind::SendActivation, s, action.microbatch);
      } else if (is_backward_input(action.kind)) {
        if (has_next) before = make(ActionKind::RecvGradient, s, action.microbatch);
        if (has_previous) after = make(ActionKind::SendGradient, s, action.microbatch);
      }
      if (before && !present(*before)) actions.push_back(*before);
      actions.push_back(action);
      if (after && !present(*after)) actions.push_back(*after);
    }
    schedule.ranks[rank] = std::move(actions);
  }
}

void add_data_parallel_actions(Schedule& schedule) {
  for (std::vector<Action>& old_actions : schedule.ranks) {
    // Per stage in the list: where its Unshard and ReduceGrad go (-1: none to insert).
    struct Places {
      int unshard_before = -1;
      int reduce_after = -1;
      bool has_unshard = false;
      bool has_reduce = false;
    };
    std::map<int, Places> places;
    const int count = static_cast<int>(old_actions.size());
    for (int i = 0; i < count; ++i) {
      const Action& a = old_actions[i];
      Places& p = places[a.stage];
      if (a.kind == ActionKind::Unshard) p.has_unshard = true;
      if (a.kind == ActionKind::ReduceGrad) p.has_reduce = true;
      if (is_data_parallel(a.kind)) continue;
      if (p.unshard_before < 0) p.unshard_before = i;
      if (a.kind == ActionKind::Backward || a.kind == ActionKind::BackwardWeight) {
        p.reduce_after = i;
        const Action send = make(ActionKind::SendGradient, a.stage, a.microbatch);
        if (i + 1 < count && old_actions[i + 1] == send) p.reduce_after = i + 1;
      }
    }
    std::vector<Action> actions;
    for (int i = 0; i < count; ++i) {
      const Action& a = old_actions[i];
      const Places& p = places[a.stage];
      if (i == p.unshard_before && !p.has_unshard) {
        actions.push_back(make(ActionKind::Unshard, a.stage, -1));
      }
      actions.push_back(a);
      if (i == p.reduce_after && !p.has_reduce) {
        actions.push_back(make(ActionKind::ReduceGrad, a.stage, -1));
      }
    }
    old_actions = std::move(actions);
  }
}

}  // namespace titan::distributed

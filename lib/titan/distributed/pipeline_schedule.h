// Pipeline schedules as data (docs/parallelism.md, "Pipeline parallelism"): for every pp
// rank, the ordered list of actions it runs in one step on (stage, microbatch). Nothing
// here runs a model or talks to another rank: generators make the lists, a CSV reader reads
// them, add_communication inserts the transfers the compute actions imply,
// add_data_parallel_actions the FSDP gathers and gradient reductions, simulate checks a list
// and measures it, and render_text / render_svg draw it (those three in
// pipeline_simulator.cpp, the rest in pipeline_schedule.cpp). The executor
// (train/pipeline.h) runs any list that simulate accepts.
//
//   Schedule s = generate_schedule(config::PipelineSchedule::Interleaved1F1B, pp, 2, m);
//   add_communication(s);
//   add_data_parallel_actions(s);
//   ScheduleReport report = simulate(s);     // InputError naming the rank and the rule
//   std::string svg = render_svg(s, report);
//
// Stages: `stages` = pp x stages_per_rank. Looped placement (every schedule but ZBV and
// DualPipeV): stage s on rank s mod pp. V placement (ZBVZeroBubble, DualPipeV: exactly two
// stages per rank): rank r holds stages r and 2 pp - 1 - r.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "titan/config/job_config.h"

namespace titan::distributed {

enum class ActionKind {
  Forward,         // F: the stage's forward of the microbatch
  Backward,        // B: its full backward (input and weight gradients)
  BackwardInput,   // I: input gradients only (zero-bubble schedules)
  BackwardWeight,  // W: weight gradients of a microbatch whose I has run
  SendActivation,  // the stage's forward output, to the next stage's rank
  RecvActivation,  // the stage's forward input, from the previous stage's rank
  SendGradient,    // the gradient at the stage's input, to the previous stage's rank
  RecvGradient,    // the gradient at the stage's output, from the next stage's rank
  // Data-parallel actions (PyTorch's UNSHARD, REDUCE_GRAD, RESHARD) concern a stage, not a
  // microbatch: their Action::microbatch is -1.
  Unshard,     // gather the stage's FSDP units, before its first action on the rank
  ReduceGrad,  // reduce-scatter its accumulated gradients after its last B and W, then free
               // the gathered values (it reshards too)
  Reshard,     // free its gathered values without reducing: after the last F of a
               // forward-only pass
};
bool is_compute(ActionKind kind);        // F, B, I, W
bool is_data_parallel(ActionKind kind);  // Unshard, ReduceGrad, Reshard

struct Action {
  ActionKind kind;
  int stage;       // global stage index
  int microbatch;  // -1 for the data-parallel kinds
  bool operator==(const Action&) const = default;
};
// PyTorch's spelling: "2F5", "2B5", "2I5", "2W5", "2SEND_F5", "2RECV_F5", "2SEND_B5",
// "2RECV_B5", and with no microbatch "2UNSHARD", "2REDUCE_GRAD", "2RESHARD".
std::string action_name(const Action& action);

struct Schedule {
  std::string name;      // "1F1B", "Interleaved1F1B", "csv:<file>", ...
  int pp = 1;            // ranks
  int stages = 1;        // pp x stages per rank
  int microbatches = 1;
  bool v_placement = false;
  std::vector<std::vector<Action>> ranks;  // ranks[r]: rank r's actions in order

  int stages_per_rank() const { return stages / pp; }
  int rank_of(int stage) const;
  std::vector<int> stages_of(int rank) const;  // ascending
};

// Stages per rank a schedule needs by default: 1 for GPipe and 1F1B (single-stage
// schedules and PipelineScheduleSingle), 2 for the others.
bool is_single_stage(config::PipelineSchedule kind);
int default_stages_per_rank(config::PipelineSchedule kind);

// The named schedule's compute actions for pp ranks, `stages_per_rank` stages each and
// `microbatches` microbatches. InputError (one line, the numbers and what would work) when
// the schedule rejects the request: a single-stage schedule with several stages per rank, a
// multi-stage one with one, ZBV and DualPipeV with other than two, and PyTorch's microbatch
// rules (Interleaved1F1B, InterleavedZeroBubble: microbatches % max(1, microbatches / pp)
// == 0; DualPipeV: microbatches >= 2 pp; ...). PipelineScheduleSingle and
// PipelineScheduleMulti have no generator: they come from a CSV (read_schedule_csv).
Schedule generate_schedule(config::PipelineSchedule kind, int pp, int stages_per_rank,
                           int microbatches);

// A schedule from torchtitan's CSV format: row r is rank r's compute actions,
// comma-separated, each <stage><F|B|I|W><microbatch> (blank cells skipped). Stage s is on
// rank s mod pp. InputError naming `origin`, the row (1-based) and the rule for: a row
// count other than pp, a cell that does not parse, a stage on another rank's row, a stage or
// microbatch out of range. PyTorch's other spellings read too: transfer cells (2SEND_F5,
// 2RECV_B5, as its compute_comms format writes them), long names (2FULL_BACKWARD5),
// overlapped pairs ("(0F1;3B0)OVERLAP_F_B", run in order), and its FSDP and
// gradient-reduction cells, kept as data-parallel actions with microbatch -1 (2UNSHARD,
// 2REDUCE_GRAD, 2RESHARD: no microbatch in the cell).
Schedule read_schedule_csv(const std::string& text, const std::string& origin, int pp,
                           int stages_per_rank, int microbatches);

// The reverse of read_schedule_csv: one row per rank, action_name cells (transfers too, when
// the schedule has them, as PyTorch's compute_comms format), each row ending in a newline.
std::string write_schedule_csv(const Schedule& schedule);

// Inserts the transfers the compute actions imply: a RecvActivation just before each
// forward whose previous stage is on another rank and a SendActivation just after each
// forward whose next stage is; RecvGradient before each B or I whose next stage is on another
// rank and SendGradient after each B or I whose previous stage is. Adjacent stages on one
// rank hand over in memory. Idempotent on a schedule that has them already.
void add_communication(Schedule& schedule);

// Inserts the data-parallel actions, for each rank and each stage in its list: Unshard just
// before the stage's first action there (transfers included: before the receive that
// precedes its first F), and ReduceGrad just after its last B or W, past the SendGradient
// that directly follows that B (so the previous rank gets its gradient before this one
// reduce-scatters). Call it after add_communication for those places; before, the list is
// valid too. Idempotent: a stage that has an Unshard (a ReduceGrad) already gets none.
// Reshard is for forward-only passes: nothing inserts it, but the CSV reader and simulate
// accept it.
void add_data_parallel_actions(Schedule& schedule);

struct ScheduleReport {
  int64_t makespan = 0;            // time units, F = I = W = 1 and B = 2, transfers and
                                   // data-parallel actions free
  double bubble_fraction = 0;      // idle time over pp x makespan
  std::vector<double> idle_fraction;     // per rank
  std::vector<int> peak_in_flight;       // per rank: most microbatch-stages forwarded whose
                                         // weight gradients have not run yet
  // Per rank, per action (parallel to Schedule::ranks): start time and duration.
  std::vector<std::vector<int64_t>> start, duration;
};

// Runs the list on a simulated pipeline (each rank runs its actions in order; a receive
// waits for its send; a compute action waits for its inputs) and checks it. InputError
// naming the rank, the action and the rule when: a (stage, microbatch) lacks a pass or has
// one twice (F once; B once, or I once and W once), a pass runs on a rank that does not hold
// its stage, a pass comes before one it depends on (F of stage s-1 before F of s; F before
// B/I; B/I of stage s+1 before B/I of s; I before W), a send has no matching receive or the
// reverse, or the ranks deadlock (the message names each stuck rank's next action). The
// data-parallel actions are optional per stage and take no time; when present: on the rank
// that holds the stage, at most one Unshard, one ReduceGrad and one Reshard per stage,
// Unshard before every action of its stage, ReduceGrad after every B and W of its stage and
// no compute of the stage after it, Reshard after every F of its stage.
ScheduleReport simulate(const Schedule& schedule);

// The textbook bubble of a single-stage schedule: (pp - 1) / (microbatches + pp - 1).
double textbook_bubble(int pp, int microbatches);

// One line per rank (its compute actions, in order, with the times), a header with the
// schedule's name, sizes and bubble fraction.
std::string render_text(const Schedule& schedule, const ScheduleReport& report);
// An SVG picture: one row per rank, one box per compute action at its simulated time,
// coloured by pass (F, B, I, W), labelled by microbatch (and stage when several per rank),
// the bubble fraction in the title.
std::string render_svg(const Schedule& schedule, const ScheduleReport& report);

}  // namespace titan::distributed

// Pipeline schedules as data: every generator's lists pass the simulator for pp 2, 4, 8 and
// several microbatch counts, the bubbles match the textbook where there is one, the memory
// bounds hold, the data-parallel actions land where they belong and change no timing, bad
// requests and bad CSVs are InputErrors naming the rule, and the renderers draw every action.
#include "titan/distributed/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "titan/core/error.h"

namespace titan::distributed {
namespace {

using config::PipelineSchedule;

constexpr PipelineSchedule kGenerated[] = {
    PipelineSchedule::GPipe,
    PipelineSchedule::OneForwardOneBackward,
    PipelineSchedule::Interleaved1F1B,
    PipelineSchedule::LoopedBFS,
    PipelineSchedule::InterleavedZeroBubble,
    PipelineSchedule::ZBVZeroBubble,
    PipelineSchedule::DualPipeV,
};

bool is_zero_bubble(PipelineSchedule kind) {
  return kind == PipelineSchedule::InterleavedZeroBubble ||
         kind == PipelineSchedule::ZBVZeroBubble || kind == PipelineSchedule::DualPipeV;
}

// pp, an odd count and 2 pp; DualPipeV needs 2 pp or more, so it gets 2 pp, 2 pp + 1, 4 pp.
std::vector<int> microbatch_counts(PipelineSchedule kind, int pp) {
  if (kind == PipelineSchedule::DualPipeV) return {2 * pp, 2 * pp + 1, 4 * pp};
  return {pp, pp + 1, 2 * pp};
}

Schedule generate(PipelineSchedule kind, int pp, int microbatches) {
  return generate_schedule(kind, pp, default_stages_per_rank(kind), microbatches);
}

// The InputError's message, or a test failure when none is thrown.
template <class Call>
std::string input_error(Call&& call) {
  try {
    call();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected an InputError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an InputError, got none";
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

int count_of(const std::string& text, const std::string& part) {
  int count = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) {
    ++count;
  }
  return count;
}

// Counts each (stage, microbatch)'s passes directly, apart from simulate's own checks.
void expect_every_pass_once(const Schedule& s) {
  std::map<std::tuple<int, int, ActionKind>, int> count;
  for (int rank = 0; rank < s.pp; ++rank) {
    for (const Action& a : s.ranks[rank]) {
      if (!is_compute(a.kind)) continue;
      EXPECT_EQ(s.rank_of(a.stage), rank) << action_name(a);
      ++count[{a.stage, a.microbatch, a.kind}];
    }
  }
  int passes = 0;
  for (int stage = 0; stage < s.stages; ++stage) {
    for (int mb = 0; mb < s.microbatches; ++mb) {
      auto n = [&](ActionKind kind) { return count[{stage, mb, kind}]; };
      EXPECT_EQ(n(ActionKind::Forward), 1) << "stage " << stage << " mb " << mb;
      const bool full = n(ActionKind::Backward) == 1 && n(ActionKind::BackwardInput) == 0 &&
                        n(ActionKind::BackwardWeight) == 0;
      const bool split = n(ActionKind::Backward) == 0 && n(ActionKind::BackwardInput) == 1 &&
                         n(ActionKind::BackwardWeight) == 1;
      EXPECT_TRUE(full || split) << "stage " << stage << " mb " << mb;
      passes += n(ActionKind::Forward) + n(ActionKind::Backward) + n(ActionKind::BackwardInput) +
                n(ActionKind::BackwardWeight);
    }
  }
  int listed = 0;
  for (const auto& actions : s.ranks) {
    for (const Action& a : actions) listed += is_compute(a.kind) ? 1 : 0;
  }
  EXPECT_EQ(passes, listed) << "a pass on an unexpected (stage, microbatch)";
}

class GeneratedSchedule : public testing::TestWithParam<PipelineSchedule> {};

TEST_P(GeneratedSchedule, EveryPassOnceAndTheSimulatorAccepts) {
  const PipelineSchedule kind = GetParam();
  for (int pp : {2, 4, 8}) {
    for (int m : microbatch_counts(kind, pp)) {
      SCOPED_TRACE("pp " + std::to_string(pp) + ", " + std::to_string(m) + " microbatches");
      Schedule s = generate(kind, pp, m);
      EXPECT_EQ(s.stages, pp * default_stages_per_rank(kind));
      expect_every_pass_once(s);
      // Implicit transfers (compute-only lists) and explicit ones time the same.
      const ScheduleReport compute_only = simulate(s);
      add_communication(s);
      const ScheduleReport report = simulate(s);
      EXPECT_EQ(report.makespan, compute_only.makespan);
      EXPECT_EQ(report.peak_in_flight, compute_only.peak_in_flight);
      EXPECT_GT(report.bubble_fraction, 0.0);
      EXPECT_LT(report.bubble_fraction, 1.0);
      if (is_zero_bubble(kind)) {
        const ScheduleReport one_f_one_b =
            simulate(generate(PipelineSchedule::OneForwardOneBackward, pp, m));
        EXPECT_LT(report.bubble_fraction, one_f_one_b.bubble_fraction);
      }
      if (s.v_placement) {
        // Two stages of activations per rank in steady state, a microbatch or so more while
        // the W's catch up.
        for (int peak : report.peak_in_flight) EXPECT_LE(peak, 2 * pp + 1);
      }
    }
  }
}

// Each rank has one UNSHARD and one REDUCE_GRAD per stage it holds: the UNSHARD just before
// the stage's first action, the REDUCE_GRAD just after its last B or W (past that B's send).
void expect_data_parallel_places(const Schedule& s) {
  for (int rank = 0; rank < s.pp; ++rank) {
    const std::vector<Action>& actions = s.ranks[rank];
    for (int stage : s.stages_of(rank)) {
      SCOPED_TRACE("rank " + std::to_string(rank) + ", stage " + std::to_string(stage));
      std::vector<int> unshards, reduces, others;
      int last_backward = -1;
      for (int i = 0; i < static_cast<int>(actions.size()); ++i) {
        const Action& a = actions[i];
        if (a.stage != stage) continue;
        EXPECT_NE(a.kind, ActionKind::Reshard) << action_name(a);
        if (a.kind == ActionKind::Unshard) {
          unshards.push_back(i);
        } else if (a.kind == ActionKind::ReduceGrad) {
          reduces.push_back(i);
        } else {
          others.push_back(i);
        }
        if (a.kind == ActionKind::Backward || a.kind == ActionKind::BackwardWeight) {
          last_backward = i;
        }
        if (is_data_parallel(a.kind)) {
          EXPECT_EQ(a.microbatch, -1) << action_name(a);
        }
      }
      ASSERT_EQ(unshards.size(), 1u);
      ASSERT_EQ(reduces.size(), 1u);
      ASSERT_FALSE(others.empty());
      ASSERT_GE(last_backward, 0);
      EXPECT_EQ(unshards[0] + 1, others.front());
      const Action& backward = actions[last_backward];
      const Action send{ActionKind::SendGradient, stage, backward.microbatch};
      const bool sends = last_backward + 1 < static_cast<int>(actions.size()) &&
                         actions[last_backward + 1] == send;
      EXPECT_EQ(reduces[0], last_backward + (sends ? 2 : 1)) << action_name(backward);
      EXPECT_EQ(others.back(), reduces[0] - 1);
    }
  }
}

// The data-parallel actions take no time: every generated schedule, with and without
// transfers (inserted before or after them), times as it did, and adding them twice adds
// nothing.
TEST_P(GeneratedSchedule, DataParallelActionsLandInPlaceAndChangeNoTiming) {
  const PipelineSchedule kind = GetParam();
  for (int pp : {2, 4}) {
    for (int m : microbatch_counts(kind, pp)) {
      SCOPED_TRACE("pp " + std::to_string(pp) + ", " + std::to_string(m) + " microbatches");
      const Schedule compute_only = generate(kind, pp, m);
      const ScheduleReport plain = simulate(compute_only);
      Schedule with_transfers = compute_only;
      add_communication(with_transfers);
      Schedule data_parallel_first = compute_only;
      add_data_parallel_actions(data_parallel_first);
      expect_data_parallel_places(data_parallel_first);
      add_communication(data_parallel_first);
      Schedule data_parallel_only = compute_only;
      add_data_parallel_actions(data_parallel_only);
      add_data_parallel_actions(with_transfers);
      expect_data_parallel_places(with_transfers);
      for (const Schedule* s : {&data_parallel_only, &with_transfers, &data_parallel_first}) {
        const ScheduleReport report = simulate(*s);
        EXPECT_EQ(report.makespan, plain.makespan);
        EXPECT_DOUBLE_EQ(report.bubble_fraction, plain.bubble_fraction);
        EXPECT_EQ(report.idle_fraction, plain.idle_fraction);
        EXPECT_EQ(report.peak_in_flight, plain.peak_in_flight);
        Schedule again = *s;
        add_data_parallel_actions(again);
        EXPECT_EQ(again.ranks, s->ranks);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllGenerators, GeneratedSchedule, testing::ValuesIn(kGenerated),
                         [](const testing::TestParamInfo<PipelineSchedule>& param) {
                           std::string name(config::choice_name(param.param));
                           return name == "1F1B" ? std::string("OneForwardOneBackward") : name;
                         });

// With F = 1 and B = 2 a fill-drain pipeline of m microbatches on p ranks takes
// 3 (m + p - 1): each rank is busy 3 m, so idle (p - 1) / (m + p - 1) of the time, the
// textbook bubble. 1F1B only reorders within that envelope.
TEST(PipelineSchedule, GpipeAnd1f1bBubblesAreTheTextbookOnes) {
  for (PipelineSchedule kind : {PipelineSchedule::GPipe, PipelineSchedule::OneForwardOneBackward}) {
    for (int pp : {2, 4, 8}) {
      for (int m : {pp, pp + 1, 2 * pp}) {
        const ScheduleReport report = simulate(generate(kind, pp, m));
        EXPECT_EQ(report.makespan, 3 * (m + pp - 1));
        EXPECT_NEAR(report.bubble_fraction, textbook_bubble(pp, m), 1e-12);
        for (double idle : report.idle_fraction) EXPECT_NEAR(idle, textbook_bubble(pp, m), 1e-12);
      }
    }
  }
  EXPECT_DOUBLE_EQ(textbook_bubble(4, 8), 3.0 / 11.0);
}

// Interleaving v stages per rank shrinks the bubble to (p - 1) / (v m + p - 1) in this time
// model (stages cost the same whatever v is); looped BFS has the same fill and drain.
TEST(PipelineSchedule, InterleavedBubblesShrinkWithStagesPerRank) {
  for (PipelineSchedule kind : {PipelineSchedule::Interleaved1F1B, PipelineSchedule::LoopedBFS}) {
    for (int pp : {2, 4, 8}) {
      for (int m : {pp, pp + 1, 2 * pp}) {
        const ScheduleReport report = simulate(generate(kind, pp, m));
        EXPECT_NEAR(report.bubble_fraction, static_cast<double>(pp - 1) / (2 * m + pp - 1), 1e-12)
            << choice_name(kind) << " pp " << pp << " m " << m;
      }
    }
  }
}

TEST(PipelineSchedule, OneForwardOneBackwardHoldsPpMinusRankActivations) {
  for (int pp : {2, 4, 8}) {
    for (int m : {pp, pp + 1, 2 * pp}) {
      const ScheduleReport one_f_one_b =
          simulate(generate(PipelineSchedule::OneForwardOneBackward, pp, m));
      const ScheduleReport gpipe = simulate(generate(PipelineSchedule::GPipe, pp, m));
      for (int rank = 0; rank < pp; ++rank) {
        EXPECT_EQ(one_f_one_b.peak_in_flight[rank], std::min(m, pp - rank));
        EXPECT_EQ(gpipe.peak_in_flight[rank], m);
      }
    }
  }
}

TEST(PipelineSchedule, OneForwardOneBackwardFollowsPytorchOrder) {
  const Schedule s = generate(PipelineSchedule::OneForwardOneBackward, 4, 8);
  EXPECT_EQ(write_schedule_csv(s),
            "0F0,0F1,0F2,0F3,0B0,0F4,0B1,0F5,0B2,0F6,0B3,0F7,0B4,0B5,0B6,0B7\n"
            "1F0,1F1,1F2,1B0,1F3,1B1,1F4,1B2,1F5,1B3,1F6,1B4,1F7,1B5,1B6,1B7\n"
            "2F0,2F1,2B0,2F2,2B1,2F3,2B2,2F4,2B3,2F5,2B4,2F6,2B5,2F7,2B6,2B7\n"
            "3F0,3B0,3F1,3B1,3F2,3B2,3F3,3B3,3F4,3B4,3F5,3B5,3F6,3B6,3F7,3B7\n");
}

TEST(PipelineSchedule, InterleavedWarmsUpDepthFirstByRounds) {
  // pp 2, 4 microbatches: 2 rounds of 2. Rank 0 warms up (2 - 1) x 2 + 2 x 1 = 4 forwards:
  // stage 0 microbatches 0, 1, then stage 2 microbatches 0, 1.
  const Schedule s = generate(PipelineSchedule::Interleaved1F1B, 2, 4);
  const std::vector<Action> first = {s.ranks[0].begin(), s.ranks[0].begin() + 6};
  EXPECT_EQ(first, (std::vector<Action>{{ActionKind::Forward, 0, 0},
                                        {ActionKind::Forward, 0, 1},
                                        {ActionKind::Forward, 2, 0},
                                        {ActionKind::Forward, 2, 1},
                                        {ActionKind::Forward, 0, 2},
                                        {ActionKind::Backward, 2, 0}}));
}

TEST(PipelineSchedule, PlacementIsLoopedOrV) {
  const Schedule looped = generate(PipelineSchedule::Interleaved1F1B, 4, 8);
  EXPECT_EQ(looped.rank_of(5), 1);
  EXPECT_EQ(looped.stages_of(1), (std::vector<int>{1, 5}));
  const Schedule v = generate(PipelineSchedule::ZBVZeroBubble, 4, 8);
  EXPECT_TRUE(v.v_placement);
  EXPECT_EQ(v.rank_of(5), 2);
  EXPECT_EQ(v.stages_of(0), (std::vector<int>{0, 7}));
  EXPECT_EQ(v.stages_of(3), (std::vector<int>{3, 4}));
  EXPECT_EQ(default_stages_per_rank(PipelineSchedule::OneForwardOneBackward), 1);
  EXPECT_EQ(default_stages_per_rank(PipelineSchedule::DualPipeV), 2);
  EXPECT_TRUE(is_single_stage(PipelineSchedule::PipelineScheduleSingle));
  EXPECT_FALSE(is_single_stage(PipelineSchedule::PipelineScheduleMulti));
}

TEST(PipelineSchedule, ActionNamesArePytorchSpelling) {
  EXPECT_EQ(action_name({ActionKind::Forward, 2, 5}), "2F5");
  EXPECT_EQ(action_name({ActionKind::Backward, 2, 5}), "2B5");
  EXPECT_EQ(action_name({ActionKind::BackwardInput, 2, 5}), "2I5");
  EXPECT_EQ(action_name({ActionKind::BackwardWeight, 2, 5}), "2W5");
  EXPECT_EQ(action_name({ActionKind::SendActivation, 2, 5}), "2SEND_F5");
  EXPECT_EQ(action_name({ActionKind::RecvActivation, 2, 5}), "2RECV_F5");
  EXPECT_EQ(action_name({ActionKind::SendGradient, 2, 5}), "2SEND_B5");
  EXPECT_EQ(action_name({ActionKind::RecvGradient, 2, 5}), "2RECV_B5");
  EXPECT_EQ(action_name({ActionKind::Unshard, 2, -1}), "2UNSHARD");
  EXPECT_EQ(action_name({ActionKind::ReduceGrad, 2, -1}), "2REDUCE_GRAD");
  EXPECT_EQ(action_name({ActionKind::Reshard, 2, -1}), "2RESHARD");
  EXPECT_FALSE(is_compute(ActionKind::Unshard));
  EXPECT_FALSE(is_compute(ActionKind::ReduceGrad));
  EXPECT_FALSE(is_compute(ActionKind::Reshard));
  EXPECT_TRUE(is_data_parallel(ActionKind::Reshard));
  EXPECT_FALSE(is_data_parallel(ActionKind::SendGradient));
}

// ---------------------------------------------------------------------------------------
// Requests a schedule rejects.

TEST(PipelineSchedule, DualPipeVNeedsTwicePpMicrobatches) {
  const std::string message =
      input_error([] { generate_schedule(PipelineSchedule::DualPipeV, 4, 2, 4); });
  EXPECT_EQ(message,
            "parallelism.pipeline_parallel_schedule: DualPipeV needs at least 2 x pp = 8 "
            "microbatches, got 4; raise training.local_batch_size / "
            "pipeline_parallel_microbatch_size to 8 or more");
}

TEST(PipelineSchedule, InterleavedNeedsMicrobatchesAMultipleOfRounds) {
  // pp 2, 5 microbatches: rounds = max(1, 5 / 2) = 2, and 5 % 2 != 0.
  const std::string message =
      input_error([] { generate_schedule(PipelineSchedule::Interleaved1F1B, 2, 2, 5); });
  expect_contains(message, "parallelism.pipeline_parallel_schedule: Interleaved1F1B");
  expect_contains(message, "rounds");
  expect_contains(message, "= 2, got 5 microbatches with pp = 2; use 4 or 6");
}

TEST(PipelineSchedule, SingleStageScheduleRejectsTwoStagesPerRank) {
  const std::string message =
      input_error([] { generate_schedule(PipelineSchedule::OneForwardOneBackward, 4, 2, 8); });
  expect_contains(message, "parallelism.pipeline_parallel_schedule: 1F1B runs exactly 1 stage");
  expect_contains(message, "got 2");
}

TEST(PipelineSchedule, ZbvRejectsThreeStagesPerRank) {
  const std::string message =
      input_error([] { generate_schedule(PipelineSchedule::ZBVZeroBubble, 4, 3, 8); });
  expect_contains(message, "ZBVZeroBubble runs exactly 2 stages per rank (V placement), got 3");
}

TEST(PipelineSchedule, OtherRejections) {
  expect_contains(
      input_error([] { generate_schedule(PipelineSchedule::Interleaved1F1B, 4, 1, 8); }),
      "Interleaved1F1B needs at least 2 stages per rank, got 1");
  expect_contains(
      input_error([] { generate_schedule(PipelineSchedule::OneForwardOneBackward, 4, 1, 3); }),
      "1F1B needs at least pp = 4 microbatches, got 3");
  expect_contains(
      input_error([] { generate_schedule(PipelineSchedule::PipelineScheduleMulti, 4, 2, 8); }),
      "pipeline_parallel_schedule_csv");
}

// ---------------------------------------------------------------------------------------
// CSV schedules.

// pp 2, 2 stages per rank (rank 0: stages 0 and 2, rank 1: 1 and 3), 2 microbatches; mixes
// B with I/W, and carries spaces and blank cells.
constexpr const char* kGoodCsv =
    " 0F0, 0F1 ,2F0,2F1,2I0,2W0,2B1,,0B0,0I1,0W1\n"
    "1F0,1F1,3F0,3B0,3F1,3B1,1B0,1B1,\n";

TEST(PipelineScheduleCsv, HandWrittenScheduleRoundTrips) {
  const Schedule s = read_schedule_csv(kGoodCsv, "good.csv", 2, 2, 2);
  EXPECT_EQ(s.name, "csv:good.csv");
  EXPECT_EQ(s.stages, 4);
  EXPECT_EQ(write_schedule_csv(s),
            "0F0,0F1,2F0,2F1,2I0,2W0,2B1,0B0,0I1,0W1\n"
            "1F0,1F1,3F0,3B0,3F1,3B1,1B0,1B1\n");
  const Schedule again = read_schedule_csv(write_schedule_csv(s), "again.csv", 2, 2, 2);
  EXPECT_EQ(again.ranks, s.ranks);
  expect_every_pass_once(s);
  EXPECT_GT(simulate(s).makespan, 0);
}

TEST(PipelineScheduleCsv, GeneratedScheduleWithTransfersRoundTrips) {
  Schedule s = generate(PipelineSchedule::InterleavedZeroBubble, 2, 4);
  add_communication(s);
  const Schedule read = read_schedule_csv(write_schedule_csv(s), "izb.csv", 2, 2, 4);
  EXPECT_EQ(read.ranks, s.ranks);
  EXPECT_EQ(simulate(read).makespan, simulate(s).makespan);
}

TEST(PipelineScheduleCsv, ReadsPytorchSpellings) {
  const Schedule s = read_schedule_csv(
      "0UNSHARD,0FORWARD0,0FULL_BACKWARD0,0REDUCE_GRAD\n1F0,1BACKWARD_INPUT0,1BACKWARD_WEIGHT0\n",
      "long.csv", 2, 1, 1);
  EXPECT_EQ(s.ranks[0], (std::vector<Action>{{ActionKind::Unshard, 0, -1},
                                             {ActionKind::Forward, 0, 0},
                                             {ActionKind::Backward, 0, 0},
                                             {ActionKind::ReduceGrad, 0, -1}}));
  EXPECT_EQ(s.ranks[1].size(), 3u);
  EXPECT_GT(simulate(s).makespan, 0);
  const Schedule overlapped =
      read_schedule_csv("0F0,0F1,0B0,0B1\n1F0,(1F1;1B0)OVERLAP_F_B,1B1\n", "overlap.csv", 2, 1, 2);
  EXPECT_EQ(overlapped.ranks[1], (std::vector<Action>{{ActionKind::Forward, 1, 0},
                                                      {ActionKind::Forward, 1, 1},
                                                      {ActionKind::Backward, 1, 0},
                                                      {ActionKind::Backward, 1, 1}}));
  EXPECT_GT(simulate(overlapped).makespan, 0);
}

TEST(PipelineScheduleCsv, GeneratedScheduleWithDataParallelActionsRoundTrips) {
  // The CSV format places stages looped (s on rank s mod pp), so no ZBV or DualPipeV here.
  Schedule s = generate(PipelineSchedule::InterleavedZeroBubble, 2, 4);
  add_communication(s);
  add_data_parallel_actions(s);
  const std::string csv = write_schedule_csv(s);
  EXPECT_EQ(csv.rfind("0UNSHARD,0F0,0SEND_F0,", 0), 0u) << csv;
  expect_contains(csv, "3REDUCE_GRAD");
  const Schedule read = read_schedule_csv(csv, "izb.csv", 2, 2, 4);
  EXPECT_EQ(read.ranks, s.ranks);
  EXPECT_EQ(write_schedule_csv(read), csv);
  EXPECT_EQ(simulate(read).makespan, simulate(s).makespan);
}

// RESHARD goes anywhere after the stage's last F. simulate needs every backward, so here
// the backwards follow it (as with FSDP's reshard after forward, where the backward gathers
// again); in a forward-only pass it would end the stage's list.
TEST(PipelineScheduleCsv, ReshardAfterTheLastForwardIsAccepted) {
  const char* csv =
      "0UNSHARD,0F0,0F1,0RESHARD,0B0,0B1,0REDUCE_GRAD\n"
      "1UNSHARD,1F0,1B0,1F1,1B1,1REDUCE_GRAD\n";
  const Schedule s = read_schedule_csv(csv, "reshard.csv", 2, 1, 2);
  EXPECT_EQ(s.ranks[0][3], (Action{ActionKind::Reshard, 0, -1}));
  EXPECT_EQ(write_schedule_csv(s), csv);
  const Schedule plain = read_schedule_csv("0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n", "p.csv", 2, 1, 2);
  EXPECT_EQ(simulate(s).makespan, simulate(plain).makespan);
  // render_text lists the compute actions only: the rank lines are the same.
  auto rank_lines = [](const Schedule& schedule) {
    const std::string text = render_text(schedule, simulate(schedule));
    return text.substr(text.find('\n'));
  };
  EXPECT_EQ(rank_lines(s), rank_lines(plain));
}

TEST(PipelineScheduleCsv, WrongRowCount) {
  const std::string message =
      input_error([] { read_schedule_csv("0F0,0B0\n1F0,1B0\n0F0\n", "rows.csv", 2, 1, 1); });
  expect_contains(message, "parallelism.pipeline_parallel_schedule_csv rows.csv: 3 rows");
  expect_contains(message, "one per pipeline rank: 2");
}

TEST(PipelineScheduleCsv, UnparsableCell) {
  const std::string message =
      input_error([] { read_schedule_csv("0F0,0X0\n1F0,1B0\n", "bad.csv", 2, 1, 1); });
  expect_contains(message, "bad.csv row 1: cell 2 \"0X0\" does not parse");
}

TEST(PipelineScheduleCsv, StageOnTheWrongRank) {
  const std::string message =
      input_error([] { read_schedule_csv("0F0,0B0\n1F0,0B0\n", "rank.csv", 2, 1, 1); });
  expect_contains(message,
                  "rank.csv row 2: stage 0 is on rank 0 (stage s runs on rank s mod "
                  "pp), not rank 1");
}

TEST(PipelineScheduleCsv, MicrobatchOutOfRange) {
  const std::string message =
      input_error([] { read_schedule_csv("0F0,0B0\n1F0,1B5\n", "mb.csv", 2, 1, 1); });
  expect_contains(message, "mb.csv row 2: microbatch 5 in 1B5 is out of range");
}

TEST(PipelineScheduleCsv, StageOutOfRange) {
  const std::string message =
      input_error([] { read_schedule_csv("0F0,4B0\n1F0,1B0\n", "stage.csv", 2, 2, 1); });
  expect_contains(message, "stage.csv row 1: stage 4 in 4B0 is out of range");
}

TEST(PipelineScheduleCsv, MissingPass) {
  const Schedule s = read_schedule_csv("0F0\n1F0,1B0\n", "missing.csv", 2, 1, 1);
  expect_contains(input_error([&] { simulate(s); }),
                  "pipeline schedule csv:missing.csv: rank 0 (row 1): 0B0 is missing");
}

TEST(PipelineScheduleCsv, BackwardBeforeForward) {
  EXPECT_GT(simulate(read_schedule_csv("0F0,0B0\n1F0,1B0\n", "ok.csv", 2, 1, 1)).makespan, 0);
  const Schedule s = read_schedule_csv("0B0,0F0\n1F0,1B0\n", "order.csv", 2, 1, 1);
  expect_contains(input_error([&] { simulate(s); }),
                  "rank 0 (row 1), action 0B0 runs before 0F0, which it needs (F before B or I)");
}

// A list that carries transfers must carry all of them: without its receive (and the
// matching send) a forward's input would never arrive.
TEST(PipelineScheduleCsv, MissingTransferPair) {
  const Schedule s = read_schedule_csv("0F0,0RECV_B0,0B0\n1F0,1B0,1SEND_B0\n",
                                       "transfers.csv", 2, 1, 1);
  expect_contains(input_error([&] { simulate(s); }),
                  "action 1F0 needs 1RECV_F0 before it, which the list lacks");
}

TEST(PipelineScheduleCsv, WeightBeforeInput) {
  const Schedule s = read_schedule_csv("0F0,0W0,0I0\n1F0,1B0\n", "wi.csv", 2, 1, 1);
  expect_contains(input_error([&] { simulate(s); }),
                  "rank 0 (row 1), action 0W0 runs before 0I0, which it needs (I before W)");
}

TEST(PipelineScheduleCsv, ReduceGradBeforeAWeightGradient) {
  const Schedule s =
      read_schedule_csv("0UNSHARD,0F0,0I0,0REDUCE_GRAD,0W0\n1F0,1B0\n", "rg.csv", 2, 1, 1);
  expect_contains(input_error([&] { simulate(s); }),
                  "pipeline schedule csv:rg.csv: rank 0 (row 1), action 0W0 runs after "
                  "0REDUCE_GRAD, which needs it first (REDUCE_GRAD after every B and W of its "
                  "stage)");
}

TEST(PipelineScheduleCsv, UnshardAfterAForward) {
  const Schedule s = read_schedule_csv("0F0,0UNSHARD,0B0\n1F0,1B0\n", "un.csv", 2, 1, 1);
  expect_contains(input_error([&] { simulate(s); }),
                  "pipeline schedule csv:un.csv: rank 0 (row 1), action 0F0 runs before "
                  "0UNSHARD, which it needs (UNSHARD before every action of its stage)");
}

TEST(PipelineScheduleCsv, UnshardOfAStageOnAnotherRank) {
  expect_contains(input_error([] {
                    read_schedule_csv("0UNSHARD,1UNSHARD,0F0,0B0\n1F0,1B0\n", "other.csv", 2, 1,
                                      1);
                  }),
                  "parallelism.pipeline_parallel_schedule_csv other.csv row 1: stage 1 is on "
                  "rank 1 (stage s runs on rank s mod pp), not rank 0");
  // The same list built in code reaches simulate, which names the rule too.
  Schedule s = read_schedule_csv("0F0,0B0\n1F0,1B0\n", "other.csv", 2, 1, 1);
  s.ranks[0].insert(s.ranks[0].begin(), Action{ActionKind::Unshard, 1, -1});
  expect_contains(input_error([&] { simulate(s); }),
                  "rank 0 (row 1), action 1UNSHARD: stage 1 runs on rank 1, not rank 0");
}

TEST(PipelineScheduleCsv, OtherDataParallelMistakes) {
  auto simulate_error = [](const char* csv) {
    return input_error([&] { simulate(read_schedule_csv(csv, "dp.csv", 2, 1, 2)); });
  };
  expect_contains(simulate_error("0UNSHARD,0F0,0F1,0B0,0UNSHARD,0B1\n1F0,1B0,1F1,1B1\n"),
                  "rank 0 (row 1), action 0UNSHARD: runs twice (positions 1 and 5); a stage "
                  "has at most one UNSHARD, one REDUCE_GRAD and one RESHARD per step");
  expect_contains(simulate_error("0F0,0RESHARD,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n"),
                  "rank 0 (row 1), action 0F1 runs after 0RESHARD, which needs it first "
                  "(RESHARD after every F of its stage)");
  expect_contains(simulate_error("0F0,0B0,0REDUCE_GRAD,0F1,0B1\n1F0,1B0,1F1,1B1\n"),
                  "rank 0 (row 1), action 0F1 runs after 0REDUCE_GRAD, which freed the "
                  "stage's gathered values (a stage computes nothing after its REDUCE_GRAD)");
  expect_contains(
      input_error([] { read_schedule_csv("0F0,0UNSHARD0\n1F0\n", "dp.csv", 2, 1, 1); }),
      "dp.csv row 1: cell 2 \"0UNSHARD0\" does not parse");
  Schedule s = read_schedule_csv("0F0,0B0\n1F0,1B0\n", "dp.csv", 2, 1, 1);
  s.ranks[0].push_back(Action{ActionKind::ReduceGrad, 0, 0});
  expect_contains(input_error([&] { simulate(s); }),
                  "action 0REDUCE_GRAD: has microbatch 0; a data-parallel action concerns the "
                  "whole stage, its microbatch is -1");
}

// Rank 0 waits for 1B0 before it forwards microbatch 1; rank 1 forwards microbatch 1 first.
constexpr const char* kDeadlockCsv = "0F0,0B0,0F1,0B1\n1F1,1F0,1B0,1B1\n";

TEST(PipelineScheduleCsv, Deadlock) {
  const Schedule s = read_schedule_csv(kDeadlockCsv, "dead.csv", 2, 1, 2);
  expect_contains(input_error([&] { simulate(s); }),
                  "the ranks deadlock: rank 0 (row 1) waits at 0B0 for 1B0 on rank 1; "
                  "rank 1 (row 2) waits at 1F1 for 0F1 on rank 0");
  Schedule with_transfers = s;
  add_communication(with_transfers);
  expect_contains(input_error([&] { simulate(with_transfers); }),
                  "rank 0 (row 1) waits at 0RECV_B0 for 1SEND_B0 on rank 1; "
                  "rank 1 (row 2) waits at 1RECV_F1 for 0SEND_F1 on rank 0");
}

// ---------------------------------------------------------------------------------------
// Transfers.

TEST(PipelineSchedule, AddCommunicationInsertsTransfersOnce) {
  Schedule s = generate(PipelineSchedule::OneForwardOneBackward, 2, 2);
  add_communication(s);
  EXPECT_EQ(write_schedule_csv(s),
            "0F0,0SEND_F0,0F1,0SEND_F1,0RECV_B0,0B0,0RECV_B1,0B1\n"
            "1RECV_F0,1F0,1B0,1SEND_B0,1RECV_F1,1F1,1B1,1SEND_B1\n");
  const Schedule once = s;
  add_communication(s);
  EXPECT_EQ(s.ranks, once.ranks);
}

TEST(PipelineSchedule, VPlacementHandsOverInMemoryAtTheTurn) {
  Schedule s = generate(PipelineSchedule::ZBVZeroBubble, 2, 4);
  add_communication(s);
  // Stages 1 and 2 are both on rank 1: no transfer between them.
  for (const Action& a : s.ranks[1]) {
    EXPECT_FALSE(a.kind == ActionKind::SendActivation && a.stage == 1) << action_name(a);
    EXPECT_FALSE(a.kind == ActionKind::SendGradient && a.stage == 2) << action_name(a);
  }
  simulate(s);
}

TEST(PipelineSchedule, ReceiveWithoutSendIsRejected) {
  Schedule s = generate(PipelineSchedule::OneForwardOneBackward, 2, 2);
  add_communication(s);
  std::erase(s.ranks[0], Action{ActionKind::SendActivation, 0, 1});
  expect_contains(input_error([&] { simulate(s); }),
                  "rank 1, action 1RECV_F1: a receive without 0SEND_F1 on rank 0");
}

// ---------------------------------------------------------------------------------------
// Rendering.

TEST(PipelineSchedule, RenderSvgDrawsEveryComputeAction) {
  for (PipelineSchedule kind :
       {PipelineSchedule::OneForwardOneBackward, PipelineSchedule::InterleavedZeroBubble}) {
    Schedule s = generate(kind, 4, 8);
    add_communication(s);
    const ScheduleReport report = simulate(s);
    const std::string svg = render_svg(s, report);
    EXPECT_EQ(svg.rfind("<svg", 0), 0u);
    int compute_actions = 0;
    for (const auto& actions : s.ranks) {
      for (const Action& a : actions) compute_actions += is_compute(a.kind) ? 1 : 0;
    }
    EXPECT_EQ(count_of(svg, "<rect class=\"action "), compute_actions);
    expect_contains(svg, s.name + ": pp 4, " + std::to_string(s.stages) + " stages");
    expect_contains(svg, "8 microbatches");
    expect_contains(svg, "bubble ");
    expect_contains(svg, "F forward");
    if (s.stages_per_rank() > 1) expect_contains(svg, ">s5:3<");
  }
  const Schedule s = generate(PipelineSchedule::OneForwardOneBackward, 4, 8);
  expect_contains(render_svg(s, simulate(s)), "bubble 27.3%");
}

TEST(PipelineSchedule, RenderTextListsEachRank) {
  const Schedule s = generate(PipelineSchedule::GPipe, 2, 2);
  const std::string text = render_text(s, simulate(s));
  EXPECT_EQ(text,
            "GPipe: pp 2, 2 stages (1 per rank), 2 microbatches, makespan 9, bubble 33.3%\n"
            "rank 0 (idle 33.3%): 0F0@0 0F1@1 0B0@5 0B1@7\n"
            "rank 1 (idle 33.3%): 1F0@1 1F1@2 1B0@3 1B1@5\n");
}

}  // namespace
}  // namespace titan::distributed

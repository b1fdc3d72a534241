// Progress: the plain lines a log gets (counts, percentage, rate, ETA, at most one per
// interval, an end line), the terminal line's redraw limit and ending, unknown totals, and
// progress_callback. A fake clock and a capturing writer: no test sleeps or needs a tty.
#include "titan/core/progress.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace titan {
namespace {

struct Capture {
  double now_s = 100.0;  // any origin: Progress measures from its construction
  std::vector<std::string> written;

  ProgressOptions options(ProgressMode mode) {
    ProgressOptions options;
    options.mode = mode;
    options.clock = [this] { return now_s; };
    options.write = [this](const std::string& text) { written.push_back(text); };
    return options;
  }
};

TEST(ProgressLines, NothingBeforeTheFirstIntervalThenOneLinePerInterval) {
  Capture capture;
  Progress progress("copy", 1000, "items", capture.options(ProgressMode::Lines));
  EXPECT_EQ(progress.mode(), ProgressMode::Lines);
  capture.now_s += 5.0;
  progress.advance(100);
  EXPECT_TRUE(capture.written.empty()) << "a job shorter than the interval gets only its end line";

  capture.now_s += 5.0;  // 10 s in, 200 done: 20 items/s, 800 left, 40 s to go
  progress.advance(100);
  ASSERT_EQ(capture.written.size(), 1u);
  EXPECT_EQ(capture.written[0], "copy: 200/1000 items (20.0%), 20.0 items/s, ETA 40s");

  capture.now_s += 9.0;
  progress.advance(100);
  EXPECT_EQ(capture.written.size(), 1u) << "at most one line per 10 s";
  capture.now_s += 1.0;  // 20 s in, 400 done
  progress.advance_to(400);
  ASSERT_EQ(capture.written.size(), 2u);
  EXPECT_EQ(capture.written[1], "copy: 400/1000 items (40.0%), 20.0 items/s, ETA 30s");
}

TEST(ProgressLines, EndLineHasTheCountTimeAndRateOnce) {
  Capture capture;
  Progress progress("export", 75, "tensors", capture.options(ProgressMode::Lines));
  capture.now_s += 2.5;
  progress.advance(75);
  progress.finish();
  ASSERT_EQ(capture.written.size(), 1u);
  EXPECT_EQ(capture.written[0], "export: done, 75 tensors in 2.5s, 30.0 tensors/s");
  EXPECT_TRUE(progress.finished());
  progress.finish();
  progress.advance(10);
  EXPECT_EQ(capture.written.size(), 1u) << "finish once; advance after it is ignored";
  EXPECT_EQ(progress.done(), 75);
}

TEST(ProgressLines, BytesTakeDecimalPrefixesAndLongEtasMinutes) {
  Capture capture;
  Progress progress("tokenize", 45'600'000, "B", capture.options(ProgressMode::Lines));
  capture.now_s += 10.0;
  progress.advance(1'420'000);  // 142 kB/s: 44.18 MB left, 311 s
  ASSERT_EQ(capture.written.size(), 1u);
  EXPECT_EQ(capture.written[0], "tokenize: 1.42/45.6 MB (3.1%), 142 kB/s, ETA 5m11s");
  capture.now_s += 290.0;
  progress.advance_to(45'600'000);
  progress.finish();
  ASSERT_EQ(capture.written.size(), 3u);
  EXPECT_EQ(capture.written[2], "tokenize: done, 45.6 MB in 5m00s, 152 kB/s");
}

TEST(ProgressLines, UnknownTotalHasNoPercentageOrEta) {
  Capture capture;
  Progress progress("read", 0, "B", capture.options(ProgressMode::Lines));
  capture.now_s += 10.0;
  progress.advance(2'000'000'000);
  ASSERT_EQ(capture.written.size(), 1u);
  EXPECT_EQ(capture.written[0], "read: 2.00 GB, 200 MB/s");
}

TEST(ProgressTerminal, RedrawsAtMostTenTimesASecondAndEndsTheLine) {
  Capture capture;
  Progress progress("merge", 1024, "merges", capture.options(ProgressMode::Terminal));
  for (int i = 0; i < 1024; ++i) {
    capture.now_s += 1.0 / 1024;  // one second in all, exactly
    progress.advance();
  }
  // The first advance draws at once; then one redraw per 0.1 s.
  EXPECT_GE(capture.written.size(), 10u);
  EXPECT_LE(capture.written.size(), 11u);
  for (const std::string& text : capture.written) {
    EXPECT_EQ(text.rfind("\rmerge [", 0), 0u) << text;
    EXPECT_EQ(text.find('\n'), std::string::npos) << "redraws stay on one line";
  }
  EXPECT_NE(capture.written.back().find("/1024 merges"), std::string::npos) << capture.written.back();

  progress.finish();
  const std::string& last = capture.written.back();
  EXPECT_EQ(last, "\rmerge [##############################] 100.0%  1024/1024 merges  1.02k merges/s  1.0s\x1b[K\n");
}

TEST(ProgressTerminal, HalfWayShowsBarPercentRateAndEta) {
  Capture capture;
  Progress progress("tokenize", 4'000'000, "B", capture.options(ProgressMode::Terminal));
  capture.now_s += 2.0;
  progress.advance(2'000'000);
  ASSERT_EQ(capture.written.size(), 1u);
  EXPECT_EQ(capture.written[0],
            "\rtokenize [###############               ]  50.0%  2.00/4.00 MB  1.00 MB/s  ETA 2.0s\x1b[K");
}

TEST(ProgressTerminal, TheFirstDrawHasNoRateYet) {
  Capture capture;
  Progress progress("tokenize", 4'000'000, "B", capture.options(ProgressMode::Terminal));
  capture.now_s += 0.001;
  progress.advance(10'000);
  ASSERT_EQ(capture.written.size(), 1u);
  EXPECT_EQ(capture.written[0],
            "\rtokenize [                              ]   0.2%  0.01/4.00 MB  -- B/s  ETA --\x1b[K");
}

TEST(ProgressTerminal, AnUnfinishedLineIsEndedWhenDestroyed) {
  Capture capture;
  {
    Progress progress("import", 10, "tensors", capture.options(ProgressMode::Terminal));
    progress.advance(3);
  }
  ASSERT_EQ(capture.written.size(), 2u);
  EXPECT_EQ(capture.written[1], "\n") << "an error printed next starts on its own line";
}

TEST(ProgressLines, AnUnfinishedProgressWritesNoEndLine) {
  Capture capture;
  {
    Progress progress("import", 10, "tensors", capture.options(ProgressMode::Lines));
    progress.advance(3);
  }
  EXPECT_TRUE(capture.written.empty());
}

TEST(ProgressCallbackTest, MakesTheProgressOnTheFirstCallAndFinishesAtTheTotal) {
  Capture capture;
  const ProgressCallback callback = progress_callback("train-tokenizer: merging", "merges",
                                                      capture.options(ProgressMode::Lines));
  callback(0, 1789);
  capture.now_s += 10.0;
  callback(500, 1789);
  ASSERT_EQ(capture.written.size(), 1u);
  EXPECT_EQ(capture.written[0], "train-tokenizer: merging: 500/1789 merges (27.9%), 50.0 merges/s, ETA 26s");
  capture.now_s += 1.0;
  callback(1789, 1789);
  ASSERT_EQ(capture.written.size(), 2u);
  EXPECT_EQ(capture.written[1], "train-tokenizer: merging: done, 1789 merges in 11s, 163 merges/s");
  callback(1789, 1789);
  EXPECT_EQ(capture.written.size(), 2u) << "calls after the end do nothing";
}

TEST(ProgressCallbackTest, ACopySharesTheProgress) {
  Capture capture;
  const ProgressCallback callback = progress_callback("x", "items", capture.options(ProgressMode::Lines));
  const ProgressCallback copy = callback;
  callback(1, 2);
  copy(2, 2);
  ASSERT_EQ(capture.written.size(), 1u);
  EXPECT_EQ(capture.written[0].rfind("x: done, 2 items", 0), 0u) << capture.written[0];
}

TEST(ProgressText, AmountsAndDurations) {
  EXPECT_EQ(progress_amount_text(512, "B"), "512 B");
  EXPECT_EQ(progress_amount_text(14'200'000, "B"), "14.2 MB");
  EXPECT_EQ(progress_amount_text(999'999, "B"), "1.00 MB");
  EXPECT_EQ(progress_amount_text(1789, "merges"), "1789 merges");
  EXPECT_EQ(progress_amount_text(99'999, "tokens"), "99999 tokens");
  EXPECT_EQ(progress_amount_text(2'500'000, "tokens"), "2.50M tokens");
  EXPECT_EQ(progress_amount_text(123'456, "tokens"), "123k tokens");
  EXPECT_EQ(progress_duration_text(0.04), "0.0s");
  EXPECT_EQ(progress_duration_text(9.3), "9.3s");
  EXPECT_EQ(progress_duration_text(42), "42s");
  EXPECT_EQ(progress_duration_text(425), "7m05s");
  EXPECT_EQ(progress_duration_text(3 * 3600 + 12 * 60), "3h12m");
}

}  // namespace
}  // namespace titan

#include <gtest/gtest.h>

#include <string>

#include "titan/core/error.h"

namespace titan {
namespace {

int side_effects = 0;
bool touch() { return ++side_effects > 0; }

TEST(Check, PassingCheckEvaluatesItsConditionOnceAndNeverItsMessage) {
  side_effects = 0;
  int message_evaluations = 0;
  auto message = [&] { return ++message_evaluations; };
  TITAN_CHECK(touch()) << "never built " << message();
  EXPECT_EQ(side_effects, 1);
  EXPECT_EQ(message_evaluations, 0);
}

TEST(Check, FailingCheckThrowsErrorNamingFileLineAndCondition) {
  const int n = -3;
  try {
    TITAN_CHECK(n > 0) << "n must be positive, got " << n;
    FAIL() << "no throw";
  } catch (const InputError&) {
    FAIL() << "an internal check must not look like bad input";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("error_test.cpp:"), std::string::npos) << what;
    EXPECT_NE(what.find("n > 0"), std::string::npos) << what;
    EXPECT_NE(what.find("n must be positive, got -3"), std::string::npos) << what;
  }
}

TEST(Check, InputCheckThrowsInputErrorWithOnlyTheUsersMessage) {
  try {
    TITAN_CHECK_INPUT(false) << "training.steps: must be >= 1, got 0";
    FAIL() << "no throw";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "training.steps: must be >= 1, got 0");
  }
}

TEST(Check, MacroIsOneStatementInsideIfElse) {
  bool else_taken = false;
  if (false)
    TITAN_CHECK(false) << "not reached";
  else
    else_taken = true;
  EXPECT_TRUE(else_taken);
}

}  // namespace
}  // namespace titan

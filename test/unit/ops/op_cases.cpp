// The one table of op cases. Odd sizes, size 1, and the shapes that matter (GQA, a block
// boundary, a long row). What the dims mean is written beside each op's harness.
#include "op_harness.h"

namespace titan::testing {

std::vector<OpCase> op_cases() {
  return {
      // rmsnorm: {N rows, D}
      {"rmsnorm", {1, 1}},
      {"rmsnorm", {3, 7}},
      {"rmsnorm", {5, 64}},
      {"rmsnorm", {2, 129}},
      // --- linear ---
      // --- embedding ---
      // --- rope ---
      // --- swiglu ---
      // --- attention ---
      // --- cross_entropy ---
      // --- adamw ---
      // --- cast ---
  };
}

}  // namespace titan::testing

// Expert parallelism in the mixture-of-experts layer (nn/moe.h, nn/expert_parallel.h): a
// layer whose experts are split over the world (ep = every rank, E / ep experts each),
// with each rank's own tokens, against the same layer whole on every rank. Outputs and input
// gradients equal the whole layer's on the rank's tokens; an expert's weight gradient on its
// owner equals the whole layers' gradients summed over the ranks (every rank's tokens reach
// it); the router's and shared experts' gradients stay the rank's own. One forward and
// backward costs 5 all_to_all calls (counts, rows out and back; the gradients' two). Run on
// 2 and 4 ranks.
#include <gtest/gtest.h>

#include "distributed_test_main.h"
#include "support/gradient_check.h"
#include "titan/distributed/expert_parallel.h"
#include "titan/nn/moe.h"

namespace titan::distributed {
namespace {

using testing::to_values;

nn::MoeDims dims() {
  nn::MoeDims d;
  d.dim = 16;
  d.hidden_dim = 12;
  d.experts = 8;
  d.shared_experts = 1;
  d.router.score = ops::RouterScore::Sigmoid;
  d.router.top_k = 2;
  d.router.groups = 4;
  d.router.limited_groups = 2;
  d.router.route_norm = true;
  d.router.route_scale = 2.5f;
  d.load_balance_coeff = 1e-3;
  return d;
}

nn::ParallelPlan experts_marked() {
  return [](const std::string& name) {
    nn::ParameterPlan plan;
    plan.expert = name.find(".experts.") != std::string::npos;
    return plan;
  };
}

struct Pass {
  Tensor y, dx;
};

Pass run(nn::Moe& moe, const Tensor& x, const Tensor& dy) {
  for (nn::Parameter* p : moe.parameters()) {
    p->initialize(7);
    p->zero_grad();
  }
  nn::MoeRecord record;
  Pass pass{Tensor::empty(x.shape(), DType::F32), Tensor::empty(x.shape(), DType::F32)};
  moe.forward(x, pass.y, record, true);
  moe.backward_input(dy, record, pass.dx, ops::Accumulate::No);
  moe.backward_weight(record);
  return pass;
}

TEST(ExpertParallel, SplitExpertsComputeWhatTheWholeLayerComputes) {
  Communicator& world = test_world();
  const int P = world.size(), me = world.rank();
  if (P < 2 || dims().experts % P != 0) GTEST_SKIP() << "needs 2, 4 or 8 ranks";
  const int64_t N = 24, D = dims().dim, local = dims().experts / P;
  const Tensor x = testing::random_tensor({N, D}, 100 + uint64_t(me));
  const Tensor dy = testing::random_tensor({N, D}, 200 + uint64_t(me));

  nn::Moe whole("layers.1.moe", dims(), {nn::InitKind::TruncatedNormal, 0.3, 2.0},
                {nn::InitKind::TruncatedNormal, 0.3, 2.0});
  const Pass want = run(whole, x, dy);

  ExpertParallelGroup group(world);
  nn::ParameterLayout layout;
  layout.ep = {P, me};
  layout.expert_parallel = &group;
  nn::Moe split("layers.1.moe", dims(), {nn::InitKind::TruncatedNormal, 0.3, 2.0},
                {nn::InitKind::TruncatedNormal, 0.3, 2.0}, nn::Placer(layout, experts_marked()));
  const int64_t calls = world.stats()[Collective::AllToAll].calls;
  const Pass got = run(split, x, dy);
  EXPECT_EQ(world.stats()[Collective::AllToAll].calls - calls, 5);

  testing::expect_close(to_values(got.y), to_values(want.y), 1e-6, "y");
  testing::expect_close(to_values(got.dx), to_values(want.dx), 1e-6, "dx");
  EXPECT_EQ(to_values(split.load()), to_values(whole.load()));  // the rank's own picks
  const std::vector<nn::Parameter*> mine = split.parameters(), all = whole.parameters();
  ASSERT_EQ(mine.size(), all.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    const std::string& name = mine[i]->name();
    if (name.find(".experts.") == std::string::npos) {
      testing::expect_close(to_values(mine[i]->grad()), to_values(all[i]->grad()), 1e-6, name);
      continue;
    }
    // The owner's experts: the whole layers' gradients of those experts, summed over ranks.
    ASSERT_EQ(mine[i]->grad().size(0), local) << name;
    Tensor summed = all[i]->grad();
    world.all_reduce(summed).wait();
    testing::expect_close(to_values(mine[i]->grad()),
                          to_values(summed.narrow(me * local, local)), 1e-5, name);
  }
}

}  // namespace
}  // namespace titan::distributed

// Device-independent parts of ops/adamw.h: the argument checks both backends make.
#include "titan/ops/adamw.h"

namespace titan::ops {
namespace {

void check_step(int64_t step, const char* op) {
  TITAN_CHECK(step >= 1) << op << ": step counts from 1 (incremented before the update), got "
                         << step;
}

void check_tensors(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                   const Tensor& exp_avg_sq, const char* op) {
  check_dtype(param, DType::F32, op, "param");
  check_dtype(grad, DType::F32, op, "grad");
  check_dtype(exp_avg, DType::F32, op, "exp_avg");
  check_dtype(exp_avg_sq, DType::F32, op, "exp_avg_sq");
  check_shape(grad, param.shape(), op, "grad");
  check_shape(exp_avg, param.shape(), op, "exp_avg");
  check_shape(exp_avg_sq, param.shape(), op, "exp_avg_sq");
}

}  // namespace

void check_adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                      const Tensor& exp_avg_sq, int64_t step) {
  check_step(step, "adamw_step");
  check_tensors(param, grad, exp_avg, exp_avg_sq, "adamw_step");
}

void check_adamw_step_multi_tensor(const std::vector<Tensor>& params,
                                   const std::vector<Tensor>& grads,
                                   const std::vector<Tensor>& exp_avgs,
                                   const std::vector<Tensor>& exp_avg_sqs, int64_t step) {
  const char* op = "adamw_step_multi_tensor";
  TITAN_CHECK(grads.size() == params.size() && exp_avgs.size() == params.size() &&
              exp_avg_sqs.size() == params.size())
      << op << ": " << params.size() << " params, " << grads.size() << " grads, "
      << exp_avgs.size() << " exp_avgs, " << exp_avg_sqs.size() << " exp_avg_sqs";
  check_step(step, op);
  for (size_t i = 0; i < params.size(); ++i) {
    check_tensors(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], op);
  }
}

}  // namespace titan::ops

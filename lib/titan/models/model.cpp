#include "titan/models/model.h"

namespace titan::models {

void Model::initialize(uint64_t seed) {
  for (nn::Parameter* p : parameters()) p->initialize(seed);
}

void Model::zero_grads() {
  for (nn::Parameter* p : parameters()) p->zero_grad();
}

void Model::update_compute_copies() {
  for (nn::Parameter* p : parameters()) p->update_compute_copy();
}

}  // namespace titan::models

// TITAN_HOST_DEVICE marks a function both backends compile, the CPU's C++ and the GPU's
// kernels, so that what must agree between them has one definition (attention's masks,
// ops/attention_mask.h; the router's choice, ops/moe_choice.h).
#pragma once

#if defined(__CUDACC__)
#define TITAN_HOST_DEVICE __host__ __device__
#else
#define TITAN_HOST_DEVICE
#endif

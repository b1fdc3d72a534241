// Which device a process trains on.
//
// GPU: local rank modulo the devices it can see (launch notes, "Node discovery"). Under
// `srun --gpus-per-task=1` each task sees one device, so this picks device 0 there.
// distributed::Runtime calls select_cuda_device at start-up; the trainer then asks
// default_training_device(), which answers that device (or the CPU), unless the
// environment overrides it:
//
//   TITAN_DEVICE=cpu        train on the CPU even on a CUDA build with a GPU
//   TITAN_DEVICE=cuda       the current GPU (what select_cuda_device picked)
//   TITAN_DEVICE=cuda:<i>   GPU i
//
// Tests choose explicitly: train::Trainer takes a Device.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "titan/core/device.h"

namespace titan {

// Calls cudaSetDevice(local_rank % count) and returns that device; -1 on a build without
// CUDA or a machine without a GPU (then nothing is set).
int select_cuda_device(int local_rank);

// "yes, runtime 13.0" on a CUDA build (--version), "no" on a build without CUDA.
std::string cuda_runtime_version();

// The CUDA devices this process sees: 0 on a build without CUDA or a machine without one.
int cuda_device_count();

// "cpu", "cuda" (the current GPU), "cuda:<i>". InputError for anything else, for cuda on a
// build without CUDA or a machine without a GPU, and for an index beyond the GPUs seen.
Device parse_device(std::string_view text);

// TITAN_DEVICE when set (parse_device), else the current CUDA device on a CUDA build that
// sees a GPU, else the CPU.
Device default_training_device();

// The device's name as its driver reports it ("NVIDIA H100 80GB HBM3"); "cpu" for the CPU.
std::string device_name(Device device);

// The GPU's free memory now (cudaMemGetInfo); InputError on a build without CUDA.
int64_t free_device_memory_bytes(Device device);

// The dense bf16 peak of a GPU by its name, in TFLOP/s (datasheets: H100 SXM and H200 989,
// H100 PCIe 756, A100 312), the MFU denominator when metrics.peak_tflops is unset; 0 for a
// GPU not in the table.
double known_bf16_peak_tflops(std::string_view name);

// Makes `device` the calling thread's current device (cudaSetDevice), so that ops launch
// on it; nothing for the CPU. CUDA on a build without CUDA is an InputError.
void use_device(Device device);

}  // namespace titan

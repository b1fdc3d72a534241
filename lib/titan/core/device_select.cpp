#include "titan/core/device_select.h"

#include <cstdlib>
#include <string>

#include "titan/build_config.h"
#include "titan/core/error.h"

#if TITAN_HAVE_CUDA
#include "titan/core/cuda/cuda_check.h"
#endif

namespace titan {

int cuda_device_count() {
#if TITAN_HAVE_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: a CPU run, and no sticky error left behind
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

std::string cuda_runtime_version() {
#if TITAN_HAVE_CUDA
  // CUDA encodes versions as integers: 12040 -> 12.4.
  int version = 0;
  if (cudaRuntimeGetVersion(&version) != cudaSuccess) return "built with CUDA (runtime unknown)";
  return "yes, runtime " + std::to_string(version / 1000) + "." +
         std::to_string(version % 1000 / 10);
#else
  return "no";
#endif
}

int select_cuda_device(int local_rank) {
#if TITAN_HAVE_CUDA
  const int count = cuda_device_count();
  if (count == 0) return -1;
  const int device = local_rank % count;
  CUDA_CHECK(cudaSetDevice(device));
  return device;
#else
  (void)local_rank;
  return -1;
#endif
}

namespace {

int current_cuda_device() {
#if TITAN_HAVE_CUDA
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
#else
  return 0;
#endif
}

}  // namespace

std::string device_name(Device device) {
  if (device.is_cpu()) return "cpu";
#if TITAN_HAVE_CUDA
  cudaDeviceProp properties{};
  CUDA_CHECK(cudaGetDeviceProperties(&properties, device.index));
  return properties.name;
#else
  TITAN_FAIL() << "this build has no CUDA backend; no name for " << device;
#endif
}

int64_t free_device_memory_bytes(Device device) {
  TITAN_CHECK_INPUT(device.is_cuda()) << "free_device_memory_bytes: " << device << " is no GPU";
#if TITAN_HAVE_CUDA
  int previous = 0;
  CUDA_CHECK(cudaGetDevice(&previous));
  CUDA_CHECK(cudaSetDevice(device.index));
  size_t free = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free, &total));
  CUDA_CHECK(cudaSetDevice(previous));
  return int64_t(free);
#else
  TITAN_FAIL() << "this build has no CUDA backend; no memory to ask " << device << " for";
#endif
}

double known_bf16_peak_tflops(std::string_view name) {
  auto has = [&](std::string_view part) { return name.find(part) != std::string_view::npos; };
  if (has("H200")) return 989;
  if (has("H100")) return has("PCIe") ? 756 : 989;
  if (has("A100")) return 312;
  return 0;
}

Device parse_device(std::string_view text) {
  if (text == "cpu") return Device::cpu();
  const std::string_view prefix = "cuda";
  TITAN_CHECK_INPUT(text.substr(0, prefix.size()) == prefix)
      << "device '" << text << "': use cpu, cuda or cuda:<index>";
  int index = -1;
  if (text.size() > prefix.size()) {
    const std::string digits(text.substr(prefix.size() + 1));
    TITAN_CHECK_INPUT(text[prefix.size()] == ':' && !digits.empty() &&
                      digits.find_first_not_of("0123456789") == std::string::npos &&
                      digits.size() < 6)
        << "device '" << text << "': use cpu, cuda or cuda:<index>";
    index = std::stoi(digits);
  }
  TITAN_CHECK_INPUT(TITAN_HAVE_CUDA)
      << "device '" << text << "': this build has no CUDA (TITAN_CUDA=OFF or nvcc not found)";
  const int count = cuda_device_count();
  TITAN_CHECK_INPUT(count > 0) << "device '" << text << "': no CUDA device is visible";
  if (index < 0) index = current_cuda_device();
  TITAN_CHECK_INPUT(index < count)
      << "device '" << text << "': only " << count << " CUDA device" << (count == 1 ? "" : "s")
      << " visible (cuda:0 .. cuda:" << count - 1 << ")";
  return Device::cuda(index);
}

Device default_training_device() {
  if (const char* env = std::getenv("TITAN_DEVICE"); env && *env) {
    try {
      return parse_device(env);
    } catch (const InputError& error) {
      TITAN_CHECK_INPUT(false) << "TITAN_DEVICE: " << error.what();
    }
  }
  if (cuda_device_count() > 0) return Device::cuda(current_cuda_device());
  return Device::cpu();
}

void use_device(Device device) {
  if (device.is_cpu()) return;
  TITAN_CHECK_INPUT(TITAN_HAVE_CUDA)
      << "device " << device << ": this build has no CUDA (TITAN_CUDA=OFF or nvcc not found)";
#if TITAN_HAVE_CUDA
  CUDA_CHECK(cudaSetDevice(device.index));
#endif
}

}  // namespace titan

// Which device training uses (core/device_select.h): the device names parse_device takes,
// and TITAN_DEVICE overriding the automatic choice.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "titan/build_config.h"
#include "titan/core/device_select.h"
#include "titan/core/error.h"

namespace titan {
namespace {

std::string input_error_of(const char* text) {
  try {
    parse_device(text);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(DeviceSelect, CpuIsAlwaysAvailable) { EXPECT_EQ(parse_device("cpu"), Device::cpu()); }

TEST(DeviceSelect, MalformedNamesAreInputErrors) {
  for (const char* bad : {"gpu", "CPU", "cuda:", "cuda:x", "cuda1", "cuda:-1", "cuda:0:1", ""}) {
    const std::string message = input_error_of(bad);
    EXPECT_NE(message.find("use cpu, cuda or cuda:<index>"), std::string::npos)
        << "'" << bad << "': " << message;
  }
}

TEST(DeviceSelect, CudaNeedsABuildWithCudaAndADevice) {
  if (TITAN_HAVE_CUDA && cuda_device_count() > 0) {
    EXPECT_TRUE(parse_device("cuda").is_cuda());
    EXPECT_EQ(parse_device("cuda:0"), Device::cuda(0));
    const std::string beyond = "cuda:" + std::to_string(cuda_device_count());
    EXPECT_NE(input_error_of(beyond.c_str()).find("visible"), std::string::npos);
    return;
  }
  for (const char* name : {"cuda", "cuda:0"}) {
    const std::string message = input_error_of(name);
    EXPECT_TRUE(message.find("no CUDA") != std::string::npos) << name << ": " << message;
  }
}

TEST(DeviceSelect, EnvironmentOverridesTheAutomaticChoice) {
  const char* saved = std::getenv("TITAN_DEVICE");
  const std::string previous = saved ? saved : "";
  ::setenv("TITAN_DEVICE", "cpu", 1);
  EXPECT_EQ(default_training_device(), Device::cpu());
  ::setenv("TITAN_DEVICE", "tpu", 1);
  try {
    default_training_device();
    ADD_FAILURE() << "no error for TITAN_DEVICE=tpu";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("TITAN_DEVICE"), std::string::npos) << e.what();
  }
  ::unsetenv("TITAN_DEVICE");
  EXPECT_EQ(default_training_device().is_cuda(), TITAN_HAVE_CUDA && cuda_device_count() > 0);
  if (saved) ::setenv("TITAN_DEVICE", previous.c_str(), 1);
}

TEST(DeviceSelect, KnownBf16PeaksByName) {
  EXPECT_EQ(known_bf16_peak_tflops("NVIDIA H100 80GB HBM3"), 989);
  EXPECT_EQ(known_bf16_peak_tflops("NVIDIA H100 PCIe"), 756);
  EXPECT_EQ(known_bf16_peak_tflops("NVIDIA H200"), 989);
  EXPECT_EQ(known_bf16_peak_tflops("NVIDIA A100-SXM4-80GB"), 312);
  EXPECT_EQ(known_bf16_peak_tflops("NVIDIA GeForce RTX 4090"), 0);  // unknown: the config says
  EXPECT_EQ(device_name(Device::cpu()), "cpu");
}

}  // namespace
}  // namespace titan

// NcclCommunicator on one GPU: a one-rank NCCL communicator bootstrapped over a
// SelfCommunicator (the unique id is made in-process), so it runs on a single-GPU machine
// without MPI. With one rank every collective is a copy or the identity, so outputs start
// filled with a sentinel (0x7f bytes) and every check compares bits: an operation that did
// nothing, moved the wrong byte count or used the wrong NCCL type shows. Counters are
// checked as the base Communicator defines them.
// Without a GPU every test skips, saying why; without NCCL in the build the file is one
// skipped test.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_NCCL

TEST(NcclCommunicator, NeedsAnNcclBuild) {
  GTEST_SKIP() << "built without NCCL (no CUDA, or no nccl.h / libnccl at configure time)";
}

#else

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "support/cuda_device.h"
#include "titan/core/copy.h"
#include "titan/core/cuda/launch.h"
#include "titan/core/float_formats.h"
#include "titan/distributed/communicator.h"
#include "titan/distributed/nccl/nccl_communicator.h"

namespace titan::distributed {
namespace {

using testing::to_host;
using testing::expect_same_bytes;

using testing::cuda_unavailable_reason;

const Device kGpu = Device::cuda(0);
constexpr uint8_t kSentinel = 0x7f;  // 0x7f7f7f7f as f32 and 0x7f7f as bf16: ~3.4e38

// Host tensors of small integers (exact in bf16, and in any summation order).
Tensor host_values(int64_t n, DType dtype, int first) {
  Tensor t = Tensor::empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) {
    const int v = first + int(i % 97) - 40;
    switch (dtype) {
      case DType::F32: t.mutable_data<float>()[i] = float(v); break;
      case DType::BF16: t.mutable_data<bf16_t>()[i] = bf16_from_f32(float(v)); break;
      case DType::I64: t.mutable_data<int64_t>()[i] = int64_t(v) * (int64_t(1) << 33); break;
      default: ADD_FAILURE() << "no test values for " << dtype_name(dtype);
    }
  }
  return t;
}

// A device tensor whose every byte is kSentinel.
Tensor device_sentinel(int64_t n, DType dtype) {
  Tensor t = Tensor::empty({n}, dtype, kGpu);
  EXPECT_EQ(cudaMemset(t.raw_mutable_data(), kSentinel, size_t(t.bytes())), cudaSuccess);
  return t;
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// The NCCL found at run time (on the GPU machine: PyTorch's nvidia-nccl-cu13 through
// LD_LIBRARY_PATH; the binary asks for the soname libnccl.so.2) against the header built
// with. Needs no GPU. An older library than the header may reject NCCL_CONFIG_INITIALIZER's
// newer ncclConfig_t, so the versions go into the log.
TEST(NcclLibrary, RuntimeVersionMatchesTheHeadersMajorVersion) {
  int runtime = 0;
  ASSERT_EQ(ncclGetVersion(&runtime), ncclSuccess);
  std::printf("NCCL runtime %d, header %d\n", runtime, NCCL_VERSION_CODE);
  EXPECT_EQ(runtime / 10000, NCCL_VERSION_CODE / 10000);
  if (runtime < NCCL_VERSION_CODE) {
    std::printf("warning: NCCL runtime %d is older than the header %d built against\n", runtime,
                NCCL_VERSION_CODE);
  }
}

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = cuda_unavailable_reason();
    if (!reason.empty()) GTEST_SKIP() << "no CUDA device: " << reason;
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    comm_ = std::make_unique<NcclCommunicator>(bootstrap_, "nccl_self");
  }

  SelfCommunicator bootstrap_{"bootstrap"};
  std::unique_ptr<NcclCommunicator> comm_;
};

TEST_F(NcclCommunicatorTest, IsOneRankOnTheDevicesStreamsOfTheCurrentDevice) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
  EXPECT_EQ(comm_->name(), "nccl_self");
  EXPECT_EQ(comm_->device(), 0);
  EXPECT_EQ(comm_->stream(), titan::cuda::communication_stream(0));
  EXPECT_EQ(comm_->compute_stream(), titan::cuda::compute_stream(0));
  EXPECT_FALSE(comm_->aborted());
  // The bootstrap carried the 128-byte unique id.
  EXPECT_EQ(bootstrap_.stats()[Collective::Broadcast].calls, 1);
  EXPECT_EQ(bootstrap_.stats()[Collective::Broadcast].bytes, 128);
}

TEST_F(NcclCommunicatorTest, AllReduceKeepsValuesForEveryOpAndDtypeAndCounts) {
  const int64_t n = 1003;
  int64_t bytes = 0;
  for (DType dtype : {DType::F32, DType::I64}) {
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
      const Tensor expected = host_values(n, dtype, 5);
      Tensor data = to_device(expected, kGpu);
      Work work = comm_->all_reduce(data, op);
      work.wait();
      EXPECT_FALSE(work.pending());
      expect_same_bytes(to_host(data), expected,
                        std::string("all_reduce ") + std::string(dtype_name(dtype)));
      bytes += expected.bytes();
    }
  }
  EXPECT_EQ(comm_->stats()[Collective::AllReduce].calls, 6);
  EXPECT_EQ(comm_->stats()[Collective::AllReduce].bytes, bytes);
}

// NCCL reduces bf16; the base Communicator decides which dtypes reach the backend.
TEST_F(NcclCommunicatorTest, AllReduceBf16) {
  const Tensor expected = host_values(257, DType::BF16, 3);
  Tensor data = to_device(expected, kGpu);
  const std::string error = error_of([&] { comm_->all_reduce(data).wait(); });
  if (error.find("takes f32 or i64") != std::string::npos) {
    GTEST_SKIP() << "the base Communicator does not pass bf16 reductions on: " << error;
  }
  ASSERT_EQ(error, "no error");
  expect_same_bytes(to_host(data), expected, "all_reduce bf16");
}

TEST_F(NcclCommunicatorTest, ReduceScatterFillsTheOutputAndCountsTheInput) {
  for (DType dtype : {DType::F32, DType::I64}) {
    const Tensor input = host_values(515, dtype, 7);
    Tensor output = device_sentinel(515, dtype);
    comm_->reduce_scatter(to_device(input, kGpu), output).wait();
    expect_same_bytes(to_host(output), input,
                      std::string("reduce_scatter ") + std::string(dtype_name(dtype)));
  }
  EXPECT_EQ(comm_->stats()[Collective::ReduceScatter].calls, 2);
  EXPECT_EQ(comm_->stats()[Collective::ReduceScatter].bytes, 515 * 4 + 515 * 8);
}

TEST_F(NcclCommunicatorTest, AllGatherAndBroadcastMoveF32AndBf16Bits) {
  int64_t gathered = 0, broadcast = 0;
  for (DType dtype : {DType::F32, DType::BF16}) {
    const Tensor input = host_values(333, dtype, 11);
    Tensor output = device_sentinel(333, dtype);
    comm_->all_gather(to_device(input, kGpu), output).wait();
    expect_same_bytes(to_host(output), input,
                      std::string("all_gather ") + std::string(dtype_name(dtype)));
    gathered += input.bytes();

    Tensor data = to_device(input, kGpu);
    comm_->broadcast(data, 0).wait();
    expect_same_bytes(to_host(data), input,
                      std::string("broadcast ") + std::string(dtype_name(dtype)));
    broadcast += input.bytes();
  }
  EXPECT_EQ(comm_->stats()[Collective::AllGather].calls, 2);
  EXPECT_EQ(comm_->stats()[Collective::AllGather].bytes, gathered);
  EXPECT_EQ(comm_->stats()[Collective::Broadcast].calls, 2);
  EXPECT_EQ(comm_->stats()[Collective::Broadcast].bytes, broadcast);
}

// FSDP gathers in place: the input is this rank's slot of the output.
TEST_F(NcclCommunicatorTest, AllGatherInPlace) {
  const Tensor expected = host_values(64, DType::BF16, 2);
  Tensor output = to_device(expected, kGpu);
  comm_->all_gather(output.narrow(0, 64), output).wait();
  expect_same_bytes(to_host(output), expected, "in-place all_gather");
}

// Inputs written on the compute stream just before the call are what is sent, with no
// synchronisation by the caller: the operation orders itself after that stream.
TEST_F(NcclCommunicatorTest, OrdersAfterWorkQueuedOnTheComputeStream) {
  const int64_t n = int64_t(1) << 24;  // 64 MiB: a memset long enough to race with
  Tensor input = Tensor::empty({n}, DType::F32, kGpu);
  Tensor output = device_sentinel(n, DType::F32);
  ASSERT_EQ(cudaMemsetAsync(input.raw_mutable_data(), 0x3c, size_t(input.bytes()),
                            titan::cuda::compute_stream(0)),
            cudaSuccess);
  comm_->all_gather(input, output).wait();
  const Tensor host = to_host(output);
  const auto* bytes = static_cast<const uint8_t*>(host.raw_data());
  int64_t wrong = 0;
  for (int64_t i = 0; i < host.bytes(); ++i) wrong += bytes[i] != 0x3c;
  EXPECT_EQ(wrong, 0) << "bytes gathered before the compute stream's memset had finished";
}

// make_stream_wait hands results to a stream without blocking the host.
TEST_F(NcclCommunicatorTest, MakeStreamWaitOrdersTheComputeStreamAfterTheOperation) {
  const Tensor expected = host_values(4099, DType::F32, 1);
  Tensor output = device_sentinel(4099, DType::F32);
  Work work = comm_->all_gather(to_device(expected, kGpu), output);
  comm_->make_stream_wait(comm_->compute_stream());
  // copy_tensor runs on the compute stream: ordered after the gather by the event, not by
  // wait().
  expect_same_bytes(to_host(output), expected, "all_gather read on the compute stream");
  work.wait();
}

// Pipeline send/recv batched in a group; a rank may send to itself inside one.
TEST_F(NcclCommunicatorTest, GroupedSendAndRecvToSelf) {
  const Tensor expected = host_values(777, DType::BF16, 9);
  const Tensor sent = to_device(expected, kGpu);
  Tensor received = device_sentinel(777, DType::BF16);
  comm_->group_start();
  EXPECT_TRUE(comm_->in_group());
  Work send = comm_->send(sent, 0, 3);
  Work recv = comm_->recv(received, 0, 3);
  // NCCL launches at group_end: waiting now would never finish, so it is an error.
  EXPECT_NE(error_of([&] { recv.wait(); }).find("call group_end() first"), std::string::npos);
  comm_->group_end();
  EXPECT_FALSE(comm_->in_group());
  send.wait();
  recv.wait();
  expect_same_bytes(to_host(received), expected, "recv from self");
  EXPECT_EQ(comm_->stats()[Collective::Send].calls, 1);
  EXPECT_EQ(comm_->stats()[Collective::Recv].bytes, 777 * 2);
}

TEST_F(NcclCommunicatorTest, BarrierCompletesAndCountsNoBytes) {
  comm_->barrier().wait();
  comm_->barrier().wait();
  EXPECT_EQ(comm_->stats()[Collective::Barrier].calls, 2);
  EXPECT_EQ(comm_->stats()[Collective::Barrier].bytes, 0);
}

TEST_F(NcclCommunicatorTest, RejectsHostTensorsNamingTheDevice) {
  Tensor host = host_values(8, DType::F32, 0);
  const std::string error = error_of([&] { comm_->all_reduce(host).wait(); });
  EXPECT_NE(error.find("cuda:0"), std::string::npos) << error;
  EXPECT_NE(error.find("nccl_self"), std::string::npos) << error;
  EXPECT_EQ(comm_->stats()[Collective::AllReduce].calls, 0);
}

TEST_F(NcclCommunicatorTest, SplitMakesAWorkingNcclCommunicator) {
  std::unique_ptr<Communicator> part = comm_->split(0, 0, "part");
  ASSERT_NE(dynamic_cast<NcclCommunicator*>(part.get()), nullptr);
  EXPECT_EQ(part->rank(), 0);
  EXPECT_EQ(part->size(), 1);
  EXPECT_EQ(part->name(), "part");
  const Tensor expected = host_values(100, DType::F32, 4);
  Tensor output = device_sentinel(100, DType::F32);
  part->all_gather(to_device(expected, kGpu), output).wait();
  expect_same_bytes(to_host(output), expected, "all_gather on the split communicator");
  EXPECT_EQ(part->stats()[Collective::AllGather].calls, 1);
  EXPECT_EQ(comm_->stats()[Collective::AllGather].calls, 0);
}

// A receive nobody sends to waits forever on the device: the wait gives up after the
// timeout naming the NCCL call and the group, and the communicator is aborted, which stops
// the kernel (else the shared communication stream would stay blocked for the next tests).
TEST_F(NcclCommunicatorTest, TimedOutOperationAbortsTheCommunicator) {
  const double saved_timeout = comm_timeout();
  set_comm_timeout(3.0);
  Tensor data = device_sentinel(16, DType::F32);
  const auto start = std::chrono::steady_clock::now();
  const std::string error = error_of([&] { comm_->recv(data, 0).wait(); });
  const double elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  set_comm_timeout(saved_timeout);
  EXPECT_NE(error.find("ncclRecv"), std::string::npos) << error;
  EXPECT_NE(error.find("nccl_self"), std::string::npos) << error;
  EXPECT_LT(elapsed_s, 10.0);
  if (error.find("did not complete within") != std::string::npos) {
    EXPECT_TRUE(comm_->aborted());
    EXPECT_NE(error.find("aborted"), std::string::npos) << error;
  }
  // Whatever NCCL did with the lone receive, the communication stream runs again.
  // (Polled, not synchronized: a stream that stays blocked must fail this test, not hang.)
  comm_->abort();
  const auto drain_start = std::chrono::steady_clock::now();
  cudaError_t status = cudaStreamQuery(titan::cuda::communication_stream(0));
  while (status == cudaErrorNotReady &&
         std::chrono::steady_clock::now() - drain_start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    status = cudaStreamQuery(titan::cuda::communication_stream(0));
  }
  EXPECT_EQ(status, cudaSuccess) << cudaGetErrorString(status);
}

TEST_F(NcclCommunicatorTest, AbortMakesLaterOperationsThrow) {
  comm_->abort();
  EXPECT_TRUE(comm_->aborted());
  Tensor data = to_device(host_values(8, DType::F32, 0), kGpu);
  EXPECT_NE(error_of([&] { comm_->all_reduce(data).wait(); }).find("aborted"), std::string::npos);
}

}  // namespace
}  // namespace titan::distributed

#endif  // TITAN_HAVE_NCCL

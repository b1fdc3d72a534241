// Embedding on the GPU (contract in ops/embedding.h).
//
// Forward: one thread per output element copies table[ids[n], d] (bytes, no rounding).
// Backward, deterministic and without atomics: thread block (bx, by) owns a slice of the
// vocabulary (rows_per_block table rows) and a slice of the columns (kColumnsPerBlock).
// It reads the ids kThreads at a time, marks the tokens whose id falls in its rows (one
// ballot per warp), and walks the marked tokens in token order, adding dout[n, slice] to
// dtable[id, slice] with its threads across the columns. Every dtable element thus has one
// owner that adds the tokens in order, as the CPU does: with f32 dtable and dout the sums
// are the CPU's, bit for bit. An id outside [0, V) is in no block's rows: nothing is added.
#include <cuda_bf16.h>

#include <algorithm>
#include <type_traits>

#include "titan/ops/cuda/common.cuh"
#include "titan/ops/embedding.h"

namespace titan::ops::cuda {
namespace {

constexpr int kThreads = 256;  // a multiple of 32: the backward ballots warp by warp
constexpr int64_t kColumnsPerBlock = 1024;
constexpr int64_t kMaxVocabBlocks = 1024;

template <class Id, class T>
__global__ void embedding_forward_kernel(const Id* ids, const T* table, T* out, int64_t tokens,
                                         int64_t vocab, int64_t D) {
  const int64_t total = tokens * D;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t n = e / D, d = e - n * D;
    const int64_t id = int64_t(ids[n]);
    if (id >= 0 && id < vocab) {
      out[e] = table[id * D + d];
    } else {
      store(out, e, __int_as_float(0x7fc00000));  // quiet NaN: the id is a bug upstream
    }
  }
}

template <class Id, class G, class W>
__global__ void embedding_backward_kernel(const Id* ids, const G* dout, W* dtable, int64_t tokens,
                                          int64_t vocab, int64_t D, int64_t rows_per_block) {
  __shared__ int64_t chunk_ids[kThreads];
  __shared__ unsigned warp_marks[kThreads / 32];
  const int64_t v0 = int64_t(blockIdx.x) * rows_per_block;
  const int64_t v1 = min(vocab, v0 + rows_per_block);
  const int64_t d0 = int64_t(blockIdx.y) * kColumnsPerBlock;
  const int64_t d1 = min(D, d0 + kColumnsPerBlock);
  for (int64_t n0 = 0; n0 < tokens; n0 += kThreads) {
    const int64_t n = n0 + threadIdx.x;
    const int64_t id = n < tokens ? int64_t(ids[n]) : -1;
    chunk_ids[threadIdx.x] = id;
    const unsigned marks = __ballot_sync(0xffffffffu, id >= v0 && id < v1);
    if (threadIdx.x % 32 == 0) warp_marks[threadIdx.x / 32] = marks;
    __syncthreads();
    for (int w = 0; w < kThreads / 32; ++w) {
      for (unsigned m = warp_marks[w]; m != 0; m &= m - 1) {  // marked tokens, in order
        const int k = w * 32 + __ffs(int(m)) - 1;
        const int64_t row = chunk_ids[k] * D, token = (n0 + k) * D;
        for (int64_t d = d0 + threadIdx.x; d < d1; d += kThreads) {
          store(dtable, row + d, load(dtable, row + d) + load(dout, token + d));
        }
      }
    }
    __syncthreads();  // chunk_ids and warp_marks are rewritten by the next chunk
  }
}

// ---- host side ---------------------------------------------------------------------------

// Calls f with a null pointer of the C++ type stored for dtype (f32 or bf16 / i32 or i64).
template <class F>
void with_float_type(DType dtype, F&& f) {
  if (dtype == DType::F32) {
    f(static_cast<float*>(nullptr));
  } else {
    f(static_cast<__nv_bfloat16*>(nullptr));
  }
}
template <class F>
void with_id_type(DType dtype, F&& f) {
  if (dtype == DType::I32) {
    f(static_cast<int32_t*>(nullptr));
  } else {
    f(static_cast<int64_t*>(nullptr));
  }
}

template <class P>
using Pointee = std::remove_pointer_t<P>;

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  check_embedding_forward(ids, table, out, kFloatDTypes);
  check_on_one_device({{&table, "table"}, {&ids, "ids"}, {&out, "out"}}, "embedding_forward");
  const int64_t tokens = ids.numel(), vocab = table.size(0), D = table.size(1);
  const DeviceGuard guard(table.device().index);
  if (tokens * D == 0) return;
  with_id_type(ids.dtype(), [&](auto id_ptr) {
    using Id = Pointee<decltype(id_ptr)>;
    with_float_type(table.dtype(), [&](auto t_ptr) {
      using T = Pointee<decltype(t_ptr)>;
      embedding_forward_kernel<Id, T><<<grid_for(tokens * D, kThreads), kThreads, 0,
                                        compute_stream()>>>(
          static_cast<const Id*>(ids.raw_data()), static_cast<const T*>(table.raw_data()),
          static_cast<T*>(out.raw_mutable_data()), tokens, vocab, D);
    });
  });
  check_launch("embedding_forward_kernel");
}

void embedding_backward_weight(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  const char* op = "embedding_backward_weight";
  check_embedding_backward_weight(ids, dout, dtable, kFloatDTypes);
  const int64_t tokens = ids.numel(), vocab = dtable.size(0), D = dtable.size(1);
  const int64_t column_blocks = ceil_div(D, kColumnsPerBlock);
  TITAN_CHECK(column_blocks <= 65535) << op << " (cuda): D = " << D << " is over the "
                                      << 65535 * kColumnsPerBlock << " columns one launch covers";
  check_on_one_device({{&dtable, "dtable"}, {&ids, "ids"}, {&dout, "dout"}}, op);
  const DeviceGuard guard(dtable.device().index);
  if (tokens == 0 || vocab == 0 || D == 0) return;
  // About kMaxVocabBlocks blocks over the vocabulary; each reads all ids, so fewer, wider
  // slices for a large vocabulary.
  const int64_t vocab_blocks = std::min(vocab, kMaxVocabBlocks);
  const int64_t rows_per_block = ceil_div(vocab, vocab_blocks);
  const dim3 blocks(unsigned(ceil_div(vocab, rows_per_block)), unsigned(column_blocks));
  with_id_type(ids.dtype(), [&](auto id_ptr) {
    using Id = Pointee<decltype(id_ptr)>;
    with_float_type(dout.dtype(), [&](auto g_ptr) {
      using G = Pointee<decltype(g_ptr)>;
      with_float_type(dtable.dtype(), [&](auto w_ptr) {
        using W = Pointee<decltype(w_ptr)>;
        embedding_backward_kernel<Id, G, W><<<blocks, kThreads, 0, compute_stream()>>>(
            static_cast<const Id*>(ids.raw_data()), static_cast<const G*>(dout.raw_data()),
            static_cast<W*>(dtable.raw_mutable_data()), tokens, vocab, D, rows_per_block);
      });
    });
  });
  check_launch("embedding_backward_kernel");
}

}  // namespace titan::ops::cuda

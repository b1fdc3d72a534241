#include "titan/distributed/context_parallel.h"

#include <utility>

#include "titan/core/allocator.h"
#include "titan/core/copy.h"
#include "titan/core/trace.h"
#include "titan/ops/attention.h"

namespace titan::distributed {
namespace {

constexpr int kKeysTag = 0;       // K and V of a ring step
constexpr int kGradientsTag = 1;  // the running dK, dV sum

// K and V of one rank side by side, [2, B, T, Hkv, hd]: one message per ring step.
struct KeyValues {
  Tensor packed;
  Tensor k() const { return packed.narrow(0, 1).reshape(shape()); }
  Tensor v() const { return packed.narrow(1, 1).reshape(shape()); }
  Shape shape() const {
    const Shape& s = packed.shape();
    return {s[1], s[2], s[3], s[4]};
  }
  static KeyValues empty_like(const Tensor& k) {
    const Shape& s = k.shape();
    return {Tensor::empty({2, s[0], s[1], s[2], s[3]}, k.dtype(), k.device())};
  }
  static KeyValues zeros_like(const Tensor& k) {
    const Shape& s = k.shape();
    return {Tensor::zeros({2, s[0], s[1], s[2], s[3]}, k.dtype(), k.device())};
  }
  static KeyValues of(const Tensor& k, const Tensor& v) {
    KeyValues kv = empty_like(k);
    Tensor kk = kv.k(), vv = kv.v();
    copy_tensor(k, kk);
    copy_tensor(v, vv);
    return kv;
  }
};

// The owner of the keys a rank holds in ring step s: itself, then r - 1, r - 2, ...
int owner_at(int rank, int step, int size) { return ((rank - step) % size + size) % size; }

// The per-call attention arguments that stay the same over the blocks.
struct BlockCall {
  float scale;
  const nn::SequenceLayout& seq;
  Tensor& workspace;
};

// out, lse (=) the attention of q over one owner's keys.
void forward_block(const Tensor& q, const KeyValues& kv, int owner, const BlockCall& call,
                   Tensor& out, Tensor& lse) {
  TraceSpan span("attention block of cp rank " + std::to_string(owner));
  ops::attention_forward(q, kv.k(), kv.v(), call.scale, ops::AttentionMask::Causal, out, lse,
                         call.workspace, call.seq.mask_against(owner));
}

// dq and the owner's dK, dV (dkv) of one block: written (=) by the first block, added to
// (+=) by the others (dkv starts at zero, so = and += agree there).
void backward_block(const Tensor& dout, const Tensor& q, const KeyValues& kv, const Tensor& out,
                    const Tensor& lse, int owner, const BlockCall& call,
                    ops::Accumulate accumulate, Tensor& dq, KeyValues& dkv) {
  TraceSpan span("attention backward block of cp rank " + std::to_string(owner));
  Tensor dk = dkv.k(), dv = dkv.v();
  ops::attention_backward(dout, q, kv.k(), kv.v(), out, lse, call.scale,
                          ops::AttentionMask::Causal, dq, dk, dv, accumulate, call.workspace,
                          call.seq.mask_against(owner));
}

}  // namespace

ContextParallelGroup::ContextParallelGroup(Communicator& group, nn::SequenceSplit split,
                                           RotateMethod rotate)
    : group_(group), split_(split), rotate_(rotate) {}

void ContextParallelGroup::all_reduce_max(Tensor& data) const {
  group_.all_reduce(data, ReduceOp::Max).wait();
}

void ContextParallelGroup::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             float scale, const nn::SequenceLayout& seq,
                                             Tensor& out, Tensor& lse) const {
  const MemoryTagScope tag("context_parallel");
  const int n = group_.size(), me = group_.rank();
  const Device dev = q.device();
  Tensor ws = ops::attention_forward_workspace(q, k);
  const BlockCall call{scale, seq, ws};
  Tensor out_part = Tensor::empty(out.shape(), out.dtype(), dev);
  Tensor lse_part = Tensor::empty(lse.shape(), lse.dtype(), dev);
  // Block s's result goes straight into out and lse for the first, else merged into them.
  auto add_block = [&](int step, const KeyValues& kv) {
    const int owner = owner_at(me, step, n);
    if (step == 0) return forward_block(q, kv, owner, call, out, lse);
    forward_block(q, kv, owner, call, out_part, lse_part);
    ops::attention_merge(out, lse, out_part, lse_part);
  };
  KeyValues mine = KeyValues::of(k, v);
  if (rotate_ == RotateMethod::AllGather) {
    Tensor all = Tensor::empty({int64_t(n) * mine.packed.numel()}, k.dtype(), dev);
    group_.all_gather(mine.packed, all).wait();
    for (int step = 0; step < n; ++step) {
      const int64_t rows = mine.packed.size(0);  // 2: K and V of each rank
      const Tensor of_owner =
          all.reshape({int64_t(n) * rows, -1}).narrow(owner_at(me, step, n) * rows, rows);
      add_block(step, {of_owner.reshape(mine.packed.shape())});
    }
    return;
  }
  KeyValues next = KeyValues::empty_like(k);
  const int to = (me + 1) % n, from = (me + n - 1) % n;
  for (int step = 0; step < n; ++step) {
    Work sent, received;
    if (step + 1 < n) {  // the next block travels while this one computes
      sent = group_.send(mine.packed, to, kKeysTag);
      received = group_.recv(next.packed, from, kKeysTag);
    }
    add_block(step, mine);
    if (step + 1 < n) {
      sent.wait();
      received.wait();
      std::swap(mine, next);
    }
  }
}

void ContextParallelGroup::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                              const Tensor& v, const Tensor& out,
                                              const Tensor& lse, float scale,
                                              const nn::SequenceLayout& seq, Tensor& dq,
                                              Tensor& dk, Tensor& dv) const {
  const MemoryTagScope tag("context_parallel");
  const int n = group_.size(), me = group_.rank();
  const Device dev = q.device();
  Tensor ws = ops::attention_backward_workspace(q, k);
  const BlockCall call{scale, seq, ws};
  auto accumulate = [](int step) { return step == 0 ? ops::Accumulate::No : ops::Accumulate::Yes; };
  KeyValues mine = KeyValues::of(k, v);
  KeyValues grads;  // this rank's dK, dV once every rank's queries are counted
  if (rotate_ == RotateMethod::AllGather) {
    const int64_t rows = mine.packed.size(0);
    Tensor all = Tensor::empty({int64_t(n) * mine.packed.numel()}, k.dtype(), dev);
    group_.all_gather(mine.packed, all).wait();
    Tensor all_grads = Tensor::zeros(all.shape(), k.dtype(), dev);  // every owner's dK, dV
    const Tensor all_rows = all.reshape({int64_t(n) * rows, -1});
    const Tensor grad_rows = all_grads.reshape({int64_t(n) * rows, -1});
    for (int step = 0; step < n; ++step) {
      const int owner = owner_at(me, step, n);
      const KeyValues kv{all_rows.narrow(owner * rows, rows).reshape(mine.packed.shape())};
      KeyValues dkv{grad_rows.narrow(owner * rows, rows).reshape(mine.packed.shape())};
      backward_block(dout, q, kv, out, lse, owner, call, accumulate(step), dq, dkv);
    }
    grads = KeyValues::empty_like(k);
    group_.reduce_scatter(all_grads, grads.packed).wait();
  } else {
    KeyValues next = KeyValues::empty_like(k);
    KeyValues running = KeyValues::zeros_like(k);  // the dK, dV sum of the keys held
    KeyValues arriving = KeyValues::empty_like(k);
    const int to = (me + 1) % n, from = (me + n - 1) % n;
    for (int step = 0; step < n; ++step) {
      Work sent, received;
      if (step + 1 < n) {
        sent = group_.send(mine.packed, to, kKeysTag);
        received = group_.recv(next.packed, from, kKeysTag);
      }
      backward_block(dout, q, mine, out, lse, owner_at(me, step, n), call, accumulate(step), dq,
                     running);
      // The sum moves on with its keys; after the last step it reaches its owner.
      Work sum_sent = group_.send(running.packed, to, kGradientsTag);
      Work sum_received = group_.recv(arriving.packed, from, kGradientsTag);
      sum_sent.wait();
      sum_received.wait();
      std::swap(running, arriving);
      if (step + 1 < n) {
        sent.wait();
        received.wait();
        std::swap(mine, next);
      }
    }
    grads = std::move(running);
  }
  copy_tensor(grads.k(), dk);
  copy_tensor(grads.v(), dv);
}

}  // namespace titan::distributed

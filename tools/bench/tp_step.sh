#!/usr/bin/env bash
# Tensor parallelism on this machine: the same training step on 2 ranks x 1 thread as TP 2
# (synchronous and asynchronous) and as FSDP 2, against 1 rank x 2 threads, same global
# batch, in one run (docs/performance.md, "Tensor parallelism on CPU ranks").
#
#   tools/bench/tp_step.sh          dim 512, 8 layers, 8 heads, 4 kv heads, ffn 1536, vocab
#                                   32,000, global batch 4 x seq 512 (58M parameters)
#   STEPS=4 WARMUP=1 tools/bench/tp_step.sh
#
# Every side reports tokens/s per device in metrics.jsonl (the total is that times the rank
# count), the share of the step its ranks spent blocked in communication (comm_percent) and
# the bytes a rank moved per step (comm_mib_per_step, from the communicators' counters).
# Medians over steps WARMUP+1..STEPS. Environment: STEPS (6), WARMUP (2), TITAN_BUILD_DIR
# (build), KEEP=1 keeps the logs; DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB, SEQ, BATCH
# change the model. About 4 minutes on the 2-core machine.
set -euo pipefail
bench=tp_step np=2
title="TP step: 2 ranks x 1 thread (TP 2 sync, TP 2 async, FSDP 2) against 1 rank x 2 threads"
source "$(dirname "${BASH_SOURCE[0]}")/rank_step_common.sh"

run_side alone 1 --training.local_batch_size "$batch"
run_side fsdp 2 --training.local_batch_size $((batch / np))
tp=(--parallelism.tensor_parallel_degree 2 --parallelism.data_parallel_shard_degree 1
  --training.local_batch_size "$batch")
run_side tp_sync 2 "${tp[@]}"
run_side tp_async 2 "${tp[@]}" --parallelism.enable_async_tensor_parallel

python3 - "$work" "$warmup" <<'PY'
import json, statistics, sys
work, warmup = sys.argv[1], int(sys.argv[2])
def rows(name):
    path = f"{work}/{name}/metrics.jsonl"
    return [r for r in (json.loads(l) for l in open(path) if l.strip()) if r["step"] > warmup]
sides = {"alone": ("1 rank x 2 threads", 1), "fsdp": ("FSDP 2", 2),
         "tp_sync": ("TP 2 (sync)", 2), "tp_async": ("TP 2 (async)", 2)}
alone_tps = statistics.median(r["tps"] for r in rows("alone"))
print("== summary")
print(f"{'side':22s} {'tokens/s':>9s} {'vs 1 rank':>9s} {'comm %':>7s} {'MiB/step/rank':>14s}"
      f" {'loss gap':>9s}")
for name, (label, ranks) in sides.items():
    r = rows(name)
    tps = ranks * statistics.median(x["tps"] for x in r)
    comm = statistics.median(x.get("comm_percent", 0.0) for x in r)
    mib = statistics.median(x.get("comm_mib_per_step", 0.0) for x in r)
    gap = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(rows("alone"), r))
    print(f"{label:22s} {tps:9.1f} {tps / alone_tps:8.2f}x {comm:6.1f}% {mib:14.1f} {gap:9.1e}")
PY

#!/usr/bin/env bash
# FSDP on this machine: the same training step on np ranks x 1 thread (model sharded over
# them) against 1 rank x np threads, same global batch, in one run (docs/performance.md,
# "FSDP on CPU ranks"). Target: ratio >= 0.9.
#
#   tools/bench/fsdp_step.sh             np 2; dim 512, 8 layers, 8 heads, 4 kv heads, ffn 1536,
#                                        vocab 32,000, global batch 4 x seq 512 (58M parameters)
#   STEPS=4 WARMUP=1 tools/bench/fsdp_step.sh
#
# Both sides report tokens/s per device in metrics.jsonl; the total is that times the rank
# count. The median over steps WARMUP+1..STEPS is compared; the FSDP side's `comm_percent`
# (share of step time its ranks spent blocked in communication, the largest over ranks) is
# printed beside it, and again for the FSDP side run with TITAN_COMM_POLL=0 (no polls of
# the prefetched collectives between ops). Environment: NP (2), STEPS (6), WARMUP (2),
# TITAN_BUILD_DIR (build), KEEP=1 keeps the logs; DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB,
# SEQ, BATCH (the global batch) change the model. About 3-4 minutes on the 2-core machine.
set -euo pipefail
bench=fsdp_step np=${NP:-2}
title="FSDP step: $np ranks x 1 thread against 1 rank x $np threads"
source "$(dirname "${BASH_SOURCE[0]}")/rank_step_common.sh"

echo "-- 1 rank x $np threads"
OMP_NUM_THREADS=$np OPENBLAS_NUM_THREADS=$np "$exe" "${model_args[@]}" \
  --training.local_batch_size "$batch" --job.dump_folder "$work/alone" > "$work/alone.log" 2>&1 ||
  { cat "$work/alone.log" >&2; echo "fsdp_step: the one-rank run failed" >&2; exit 1; }
grep -E 'step: ' "$work/alone.log" | sed 's/^\[titan [0-9:]*\] /   /'

# The FSDP side twice: as it runs, then with TITAN_COMM_POLL=0 (no polls of the prefetched
# collectives between ops, core/comm_poll.h), which shows what the polls buy.
for variant in fsdp fsdp_nopoll; do
  poll=1
  [ "$variant" = fsdp_nopoll ] && poll=0
  echo "-- $np ranks x 1 thread (mpirun, FSDP$([ $poll = 0 ] && echo ', TITAN_COMM_POLL=0'))"
  TITAN_COMM_POLL=$poll OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpirun --oversubscribe \
    -np "$np" -x TITAN_COMM_POLL -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS "$exe" \
    "${model_args[@]}" --training.local_batch_size $((batch / np)) \
    --job.dump_folder "$work/$variant" > "$work/$variant.log" 2>&1 ||
    { cat "$work/$variant.log" >&2; echo "fsdp_step: the FSDP run failed" >&2; exit 1; }
  grep -E 'mesh: |step: ' "$work/$variant.log" | sed 's/^\[titan [0-9:]*\] /   /'
done

python3 - "$work/alone/metrics.jsonl" "$work/fsdp/metrics.jsonl" "$warmup" "$np" \
  "$work/fsdp_nopoll/metrics.jsonl" <<'PY'
import json, statistics, sys
alone_path, fsdp_path, warmup, np = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
nopoll_path = sys.argv[5]
def rows(path):
    return [r for r in (json.loads(l) for l in open(path) if l.strip()) if r["step"] > warmup]
alone, fsdp = rows(alone_path), rows(fsdp_path)
alone_tps = statistics.median(r["tps"] for r in alone)
fsdp_tps = np * statistics.median(r["tps"] for r in fsdp)
comm = statistics.median(r.get("comm_percent", 0.0) for r in fsdp)
nopoll = rows(nopoll_path)
nopoll_tps = np * statistics.median(r["tps"] for r in nopoll)
nopoll_comm = statistics.median(r.get("comm_percent", 0.0) for r in nopoll)
loss_gap = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(alone, fsdp))
print("== summary")
print(f"1 rank x {np} threads:  {alone_tps:8.1f} tokens/s")
print(f"{np} ranks x 1 thread:  {fsdp_tps:8.1f} tokens/s  (comm {comm:.1f}% of step time)")
print(f"  without the polls:  {nopoll_tps:8.1f} tokens/s  (comm {nopoll_comm:.1f}% of step time; "
      "TITAN_COMM_POLL=0)")
print(f"FSDP / one rank:      {fsdp_tps / alone_tps:.2f}x  (target >= 0.90)")
print(f"largest loss gap:     {loss_gap:.1e} (relative; same global batch)")
PY

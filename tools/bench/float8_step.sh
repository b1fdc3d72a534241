#!/usr/bin/env bash
# Float8 linears on CPU ranks, in one run (docs/performance.md, "Float8 on CPU ranks"):
#
#   1. the cost of the exact emulation: 1 rank x 2 threads, float32 against each recipe
#      (tensorwise, rowwise, rowwise_with_gw_hp): tokens/s and the ratio to float32, and the
#      largest loss gap to float32 over the measured steps;
#   2. FSDP's float8 all-gather: 2 ranks x 1 thread, tensorwise, gathering in float32
#      against gathering the converted weights in e4m3 (scales precomputed once per step):
#      MiB moved per rank per step (the communicators' count) and tokens/s.
#
#   tools/bench/float8_step.sh     debug model (dim 256, 6 layers, 16 heads, vocab 2048),
#                                  global batch 4 x seq 512
#
# Medians over steps WARMUP+1..STEPS. Environment: STEPS (6), WARMUP (2), TITAN_BUILD_DIR
# (build), KEEP=1 keeps the logs; DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB, SEQ, BATCH change
# the model. About 2 minutes on the 2-core machine.
set -euo pipefail
bench=float8_step np=2
DIM=${DIM:-256} LAYERS=${LAYERS:-6} HEADS=${HEADS:-16} KV_HEADS=${KV_HEADS:-16}
FFN=${FFN:-768} VOCAB=${VOCAB:-2048} SEQ=${SEQ:-512} BATCH=${BATCH:-4}
title="Float8 step: the CPU emulation's cost per recipe; FSDP 2's float8 all-gather"
source "$(dirname "${BASH_SOURCE[0]}")/rank_step_common.sh"

float8=(--model.converters quantize.linear.float8)
run_side f32 1 --training.local_batch_size "$batch"
for recipe in tensorwise rowwise rowwise_with_gw_hp; do
  recipe_args=()
  [ "$recipe" = tensorwise ] || recipe_args=(--quantize.linear.float8.recipe_name "$recipe")
  run_side "$recipe" 1 --training.local_batch_size "$batch" "${float8[@]}" "${recipe_args[@]}"
done
run_side fsdp_gather_f32 2 --training.local_batch_size $((batch / np)) "${float8[@]}"
run_side fsdp_gather_e4m3 2 --training.local_batch_size $((batch / np)) "${float8[@]}" \
  --quantize.linear.float8.enable_fsdp_float8_all_gather \
  --quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp

python3 - "$work" "$warmup" <<'PY'
import json, statistics, sys
work, warmup = sys.argv[1], int(sys.argv[2])
def rows(name):
    path = f"{work}/{name}/metrics.jsonl"
    return [r for r in (json.loads(l) for l in open(path) if l.strip()) if r["step"] > warmup]
def median(name, key):
    return statistics.median(r.get(key, 0.0) for r in rows(name))
f32 = median("f32", "tps")
print("== 1 rank x 2 threads: the emulation against float32")
print(f"{'side':22s} {'tokens/s':>9s} {'vs f32':>8s} {'loss gap':>9s}")
for name in ("f32", "tensorwise", "rowwise", "rowwise_with_gw_hp"):
    gap = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(rows(name), rows("f32")))
    print(f"{name:22s} {median(name, 'tps'):9.1f} {median(name, 'tps') / f32:7.2f}x {gap:9.1e}")
print("== FSDP 2 (2 ranks x 1 thread), tensorwise: what the all-gather moves")
print(f"{'side':22s} {'tokens/s':>9s} {'MiB/step/rank':>14s} {'vs f32 gather':>14s}")
base = median("fsdp_gather_f32", "comm_mib_per_step")
for name, label in (("fsdp_gather_f32", "gather in float32"),
                    ("fsdp_gather_e4m3", "gather in e4m3")):
    mib = median(name, "comm_mib_per_step")
    print(f"{label:22s} {2 * median(name, 'tps'):9.1f} {mib:14.1f} {mib / base:13.2f}x")
PY

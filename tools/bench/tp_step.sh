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
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${TITAN_BUILD_DIR:-$root/build}
exe=$build_dir/apps/titan-train
np=2 steps=${STEPS:-6} warmup=${WARMUP:-2}
dim=${DIM:-512} layers=${LAYERS:-8} heads=${HEADS:-8} kv_heads=${KV_HEADS:-4}
ffn=${FFN:-1536} vocab=${VOCAB:-32000} seq=${SEQ:-512} batch=${BATCH:-4}

if [ ! -x "$exe" ]; then
  echo "tp_step: $exe not found: build first (cmake --build $build_dir)" >&2
  exit 2
fi
if ! command -v mpirun >/dev/null; then
  echo "tp_step: mpirun not found (tools/setup.sh installs Open MPI)" >&2
  exit 2
fi
if [ $((batch % np)) -ne 0 ] || [ "$steps" -le "$warmup" ]; then
  echo "tp_step: BATCH ($batch) must divide by 2 and STEPS ($steps) exceed WARMUP ($warmup)" >&2
  exit 2
fi
# OpenBLAS reads its core type when it loads (docs/design.md, "Threads and BLAS").
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
fi
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

work=$(mktemp -d /tmp/tp_step.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then
  echo "logs kept in $work"
else
  trap 'rm -rf "$work"' EXIT
fi

model_args=(--model.flavor tiny --model.dim "$dim" --model.n_layers "$layers"
  --model.n_heads "$heads" --model.n_kv_heads "$kv_heads" --model.ffn_dim "$ffn"
  --model.vocab_size "$vocab" --training.seq_len "$seq" --training.global_batch_size "$batch"
  --training.dataset synthetic --activation_checkpoint.mode none --training.steps "$steps"
  --metrics.log_freq 1 --metrics.peak_tflops 1)

echo "== TP step: 2 ranks x 1 thread (TP 2 sync, TP 2 async, FSDP 2) against 1 rank x 2 threads"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "machine:   $cpu, $(nproc) cores;" \
     "load average $(cut -d' ' -f1-3 /proc/loadavg); OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-unset}"
echo "model:     llama3 dim $dim, $layers layers, $heads heads, $kv_heads kv heads, ffn $ffn," \
     "vocab $vocab; global batch $batch x seq $seq; fp32, synthetic tokens"
echo "steps:     $steps per side, median of steps $((warmup + 1))..$steps"

# run NAME RANKS ARGS...: one side, its step lines echoed.
run() {
  local name=$1 ranks=$2
  shift 2
  echo "-- $name"
  if [ "$ranks" = 1 ]; then
    OMP_NUM_THREADS=$np OPENBLAS_NUM_THREADS=$np "$exe" "${model_args[@]}" "$@" \
      --job.dump_folder "$work/$name" > "$work/$name.log" 2>&1 ||
      { cat "$work/$name.log" >&2; echo "tp_step: $name failed" >&2; exit 1; }
  else
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpirun --oversubscribe -np "$ranks" \
      -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS "$exe" "${model_args[@]}" "$@" \
      --job.dump_folder "$work/$name" > "$work/$name.log" 2>&1 ||
      { cat "$work/$name.log" >&2; echo "tp_step: $name failed" >&2; exit 1; }
  fi
  grep -E 'mesh: |step: ' "$work/$name.log" | sed 's/^\[titan [0-9:]*\] /   /'
}

run alone 1 --training.local_batch_size "$batch"
run fsdp 2 --training.local_batch_size $((batch / np))
tp=(--parallelism.tensor_parallel_degree 2 --parallelism.data_parallel_shard_degree 1
  --training.local_batch_size "$batch")
run tp_sync 2 "${tp[@]}"
run tp_async 2 "${tp[@]}" --parallelism.enable_async_tensor_parallel

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

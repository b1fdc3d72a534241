#!/usr/bin/env bash
# Expert parallelism on this machine: DeepSeek V3's debug model (34M parameters, 8 experts,
# top 3) trained on 2 ranks x 1 thread with FSDP and EP 2 against the same 2 ranks with FSDP
# alone and against 1 rank x 2 threads, same global batch, in one run; the EP side's last
# step is traced, and the all-to-alls' share of it is read from the trace (docs/
# performance.md, "Expert parallelism on CPU ranks").
#
#   tools/bench/ep_step.sh
#   STEPS=6 WARMUP=2 SEQ=256 BATCH=4 tools/bench/ep_step.sh
#
# Environment: STEPS (6), WARMUP (2), SEQ (256), BATCH (global, 4), TITAN_BUILD_DIR
# (build), KEEP=1 keeps the logs. About 2 minutes on the 2-core machine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${TITAN_BUILD_DIR:-$root/build}
exe=$build_dir/apps/titan-train
steps=${STEPS:-6} warmup=${WARMUP:-2} seq=${SEQ:-256} batch=${BATCH:-4} np=2
[ -x "$exe" ] || { echo "ep_step: $exe not found: build first" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "ep_step: mpirun not found (tools/setup.sh)" >&2; exit 2; }
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX  # docs/design.md, "Threads and BLAS"
fi
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d /tmp/ep_step.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $work"; else trap 'rm -rf "$work"' EXIT; fi

args=(--config "$root/configs/deepseek_v3_debug.yaml" --training.dataset synthetic
  --training.seq_len "$seq" --training.global_batch_size "$batch" --training.steps "$steps"
  --metrics.log_freq 1 --metrics.peak_tflops 1 --profiling.profile_freq "$steps")
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "== EP step: DeepSeek V3 debugmodel, $np ranks x 1 thread with EP $np, FSDP alone, 1 rank x $np threads"
echo "machine:   $cpu, $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg);" \
     "OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-unset}"
echo "model:     global batch $batch x seq $seq, fp32, synthetic tokens; median of steps" \
     "$((warmup + 1))..$steps"

side() {  # side NAME RANKS ARGS...
  local name=$1 ranks=$2
  shift 2
  echo "-- $name"
  if [ "$ranks" = 1 ]; then
    OMP_NUM_THREADS=$np OPENBLAS_NUM_THREADS=$np "$exe" "${args[@]}" "$@" \
      --job.dump_folder "$work/$name" > "$work/$name.log" 2>&1 ||
      { cat "$work/$name.log" >&2; exit 1; }
  else
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpirun --oversubscribe -np "$ranks" \
      -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS "$exe" "${args[@]}" "$@" \
      --job.dump_folder "$work/$name" > "$work/$name.log" 2>&1 ||
      { cat "$work/$name.log" >&2; exit 1; }
  fi
  grep -E 'mesh: |step: ' "$work/$name.log" | sed 's/^\[titan [0-9:]*\] /   /' | cut -c1-150
}
side alone 1 --training.local_batch_size "$batch"
side fsdp "$np" --training.local_batch_size $((batch / np))
side ep "$np" --training.local_batch_size $((batch / np)) \
  --parallelism.expert_parallel_degree "$np" --profiling.enable_profiling

python3 - "$work" "$warmup" "$np" "$steps" <<'PY'
import glob, json, statistics, sys
work, warmup, np, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def tps(name, ranks):
    rows = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl") if l.strip()]
    rows = [r for r in rows if r["step"] > warmup]
    return ranks * statistics.median(r["tps"] for r in rows), \
        statistics.median(r.get("comm_percent", 0.0) for r in rows)
alone, _ = tps("alone", 1)
fsdp, fsdp_comm = tps("fsdp", np)
ep, ep_comm = tps("ep", np)
# The traced step: per rank, the all_to_all waits over the step span.
shares = []
for path in sorted(glob.glob(f"{work}/ep/profile_trace/iteration_{steps}/rank*_trace.json")):
    events = json.load(open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    step = sum(e.get("dur", 0) for e in events if e.get("name", "").startswith("step "))
    a2a = sum(e.get("dur", 0) for e in events if e.get("name", "").startswith("all_to_all"))
    if step:
        shares.append(100.0 * a2a / step)
print("== summary")
print(f"1 rank x {np} threads:      {alone:8.1f} tokens/s")
print(f"{np} ranks, FSDP:            {fsdp:8.1f} tokens/s  (comm {fsdp_comm:.1f}% of step time)")
print(f"{np} ranks, FSDP + EP {np}:    {ep:8.1f} tokens/s  (comm {ep_comm:.1f}%; all_to_all"
      f" {max(shares) if shares else float('nan'):.1f}% of the traced step, largest rank)")
print(f"EP / FSDP alone:          {ep / fsdp:.2f}x")
print(f"EP / one rank:            {ep / alone:.2f}x")
PY

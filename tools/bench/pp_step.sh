#!/usr/bin/env bash
# Pipeline parallelism and activation checkpointing on this machine, in one run
# (docs/performance.md, "Pipeline schedules on CPU ranks" and "Activation checkpointing"):
#
#   1. every pipeline schedule at pp 2 (2 ranks x 1 thread, 4 microbatches of 1 sequence)
#      against 1 rank x 2 threads on the same global batch: tokens/s, peak memory per rank,
#      and each rank's idle fraction measured from its trace of one profiled step (the step
#      less the time inside the executor's compute actions) beside the simulator's bubble
#      (titan-plan, F = I = W = 1, B = 2) and the textbook (p - 1) / (m + p - 1);
#   2. every activation checkpointing mode on 1 rank x 2 threads: peak memory, and the step
#      time against `none`.
#
#   tools/bench/pp_step.sh          dim 512, 8 layers, 8 heads, 4 kv heads, ffn 1536, vocab
#                                   32,000, global batch 4 x seq 512 (58M parameters)
#   STEPS=4 WARMUP=1 tools/bench/pp_step.sh
#
# Medians over steps WARMUP+1..STEPS; the trace is of step STEPS. Environment: STEPS (5),
# WARMUP (2), TITAN_BUILD_DIR (build), KEEP=1 keeps the logs; DIM, LAYERS, HEADS, KV_HEADS,
# FFN, VOCAB, SEQ, BATCH change the model; LAST_LESS (1) is
# pipeline_parallel_last_stage_less_layers, what the output layer weighs in the split;
# PARTS ("pp ac") picks the parts. About 10 minutes on the 2-core machine.
set -euo pipefail
bench=pp_step np=2
STEPS=${STEPS:-5}
title="PP step: every schedule at pp 2 (2 ranks x 1 thread) and every AC mode (1 rank x 2 threads)"
source "$(dirname "${BASH_SOURCE[0]}")/rank_step_common.sh"
plan=$build_dir/apps/titan-plan

# run NAME RANKS ARGS...: one side, profiled at its last step; its step lines echoed.
run() {
  local name=$1 ranks=$2
  shift 2
  echo "-- $name"
  local args=("${model_args[@]}" "$@" --job.dump_folder "$work/$name"
    --profiling.enable_profiling --profiling.profile_freq "$steps"
    --profiling.profiler_warmup 0 --profiling.profiler_active 1)
  if [ "$ranks" = 1 ]; then
    OMP_NUM_THREADS=$np OPENBLAS_NUM_THREADS=$np "$exe" "${args[@]}" > "$work/$name.log" 2>&1 ||
      { cat "$work/$name.log" >&2; echo "pp_step: $name failed" >&2; exit 1; }
  else
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpirun --oversubscribe -np "$ranks" \
      -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS "$exe" "${args[@]}" > "$work/$name.log" 2>&1 ||
      { cat "$work/$name.log" >&2; echo "pp_step: $name failed" >&2; exit 1; }
  fi
  grep -E 'mesh: |step: ' "$work/$name.log" | sed 's/^\[titan [0-9:]*\] /   /'
}

parts=${PARTS:-pp ac} last_less=${LAST_LESS:-1}
schedules=()
[[ $parts == *pp* ]] &&
  schedules=(GPipe 1F1B Interleaved1F1B LoopedBFS InterleavedZeroBubble ZBVZeroBubble DualPipeV)
[ ${#schedules[@]} -gt 0 ] && run alone 1 --training.local_batch_size "$batch"
for s in "${schedules[@]}"; do
  pp=(--parallelism.pipeline_parallel_degree 2 --parallelism.data_parallel_shard_degree 1
    --parallelism.pipeline_parallel_schedule "$s" --training.local_batch_size "$batch"
    --parallelism.pipeline_parallel_microbatch_size 1
    --parallelism.pipeline_parallel_last_stage_less_layers "$last_less")
  run "pp_$s" 2 "${pp[@]}"
  "$plan" schedule "${model_args[@]}" "${pp[@]}" --world-size 2 |
    grep -E '^bubble:|^stage' > "$work/pp_$s.plan"
  sed 's/^/   /' "$work/pp_$s.plan"
done
ac_modes=()
[[ $parts == *ac* ]] && ac_modes=("none" "full" "selective 2" "selective op" "memory_budget 0.5")
for mode in "${ac_modes[@]}"; do
  read -r name option <<< "$mode"
  flags=(--activation_checkpoint.mode "$name")
  case $name in
    selective) flags+=(--activation_checkpoint.selective_ac_option "$option") ;;
    memory_budget) flags+=(--activation_checkpoint.memory_budget "$option") ;;
  esac
  run "ac_${name}${option:+_$option}" 1 --training.local_batch_size "$batch" "${flags[@]}"
done

python3 - "$work" "$warmup" "$steps" $((batch * seq)) "${schedules[@]}" <<'PY'
import glob, json, re, statistics, sys
work, warmup, steps, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
schedules = sys.argv[5:]
def rows(name):
    path = f"{work}/{name}/metrics.jsonl"
    return [r for r in (json.loads(l) for l in open(path) if l.strip()) if r["step"] > warmup]
def median(name, key):
    return statistics.median(r[key] for r in rows(name))
compute = re.compile(r"^pipeline \d+[FBIW]\d+$")
def busy_and_idle(name):  # per rank: seconds in compute actions, idle share of the step
    ranks = []
    traces = f"{work}/{name}/profile_traces/iteration_{steps}/rank*_trace.json"
    for path in sorted(glob.glob(traces)):
        events = json.load(open(path))["traceEvents"]
        step = next(e for e in events if e["name"] == f"step {steps}")
        busy = sum(e["dur"] for e in events if compute.match(e["name"]))
        ranks.append((busy / 1e6, 1 - busy / step["dur"]))
    return ranks
if schedules:
    alone_tps = median("alone", "tps")
    print("== pipeline schedules at pp 2, 4 microbatches (tokens/s: both ranks together;"
          " peak GiB: the larger rank's; busy: seconds in compute actions)")
    print(f"{'schedule':22s} {'tokens/s':>9s} {'vs 1 rank':>9s} {'peak GiB':>9s}"
          f" {'busy r0':>8s} {'busy r1':>8s} {'idle r0':>8s} {'idle r1':>8s}"
          f" {'simulated':>10s} {'textbook':>9s}")
    for s in schedules:
        name = f"pp_{s}"
        tps = 2 * median(name, "tps")
        ranks = busy_and_idle(name)
        plan = open(f"{work}/{name}.plan").read()
        simulated, textbook = re.findall(r"([0-9.]+)%", plan)[:2]
        busy = " ".join(f"{b:7.2f}s" for b, _ in ranks)
        idle = " ".join(f"{100 * i:7.1f}%" for _, i in ranks)
        print(f"{s:22s} {tps:9.1f} {tps / alone_tps:8.2f}x {median(name, 'memory_gib'):9.3f}"
              f" {busy} {idle} {simulated:>9s}% {textbook:>8s}%")
    print(f"{'1 rank x 2 threads':22s} {alone_tps:9.1f} {1:8.2f}x"
          f" {median('alone', 'memory_gib'):9.3f}")
if not glob.glob(f"{work}/ac_*/"):
    sys.exit(0)
print("== activation checkpointing, 1 rank x 2 threads")
print(f"{'mode':22s} {'peak GiB':>9s} {'vs none':>8s} {'step s':>7s} {'time vs none':>13s}")
none_gib, none_tps = median("ac_none", "memory_gib"), median("ac_none", "tps")
for name in sorted(glob.glob(f"{work}/ac_*/")):
    side = name.rstrip("/").split("/")[-1]
    gib, tps = median(side, "memory_gib"), median(side, "tps")
    label = side[3:].replace("_", " ")
    print(f"{label:22s} {gib:9.3f} {gib - none_gib:+8.3f} {tokens / tps:7.2f}"
          f" {none_tps / tps:12.2f}x")
PY

#!/usr/bin/env bash
# GPU training step: titan.cpp against PyTorch (eager and torch.compile) on the same GPU in
# one run, and both against the GEMM ceiling measured in that run (docs/performance.md,
# "GPU training step"). Runs on the GPU machine from the bundle that
# tools/device/build_gpu_checks.sh makes (TITAN_GPU_TARGETS="cuda_tests titan-train"); the
# device tool calls it through tools/device/run_gpu_checks.sh bench "$OUT".
#
#   tools/bench/gpu_step.sh OUT_DIR
#
# Cases (CASES, default "1B 8B-slice"):
#   1B        Llama 3.2 1B (dim 2048, 16 layers, 32/8 heads, ffn 8192, vocab 128,256, tied),
#             batch 4 x seq 2048
#   8B-slice  Llama 3.1 8B's shapes (dim 4096, 32/8 heads, ffn 14,336, vocab 128,256) with
#             4 layers, batch 2 x seq 2048
# Each side runs STEPS steps after WARMUP; the median step is reported. titan.cpp trains in
# bf16 compute with fp32 master weights (training.mixed_precision_param bfloat16); PyTorch
# in bf16 autocast over fp32 parameters with SDPA attention and fused AdamW
# (tools/bench/torch_gpu_step.py). MFU: torchtitan's FLOPs per token x tokens/s over the
# dense bf16 peak (PEAK_TFLOPS, 989 for an H100 SXM) and over the measured GEMM rate.
# Writes OUT_DIR/gpu_step.md (the table) and OUT_DIR/gpu_step.log; a side that fails is
# reported as failed and the rest still runs.
# Environment: CASES, STEPS (10), WARMUP (3), PEAK_TFLOPS (989), TITAN_GPU_BUNDLE
# (build-gpu/bundle), PYTHON (python3), TIME_LIMIT_S per side (100).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
bundle=${TITAN_GPU_BUNDLE:-$root/build-gpu/bundle}
[[ $bundle = /* ]] || bundle=$root/$bundle
exe=$bundle/bin/titan-train
python=${PYTHON:-python3}
steps=${STEPS:-10} warmup=${WARMUP:-3} peak=${PEAK_TFLOPS:-989} limit=${TIME_LIMIT_S:-100}
read -r -a cases <<<"${CASES:-1B 8B-slice}"
log=$out/gpu_step.log
: >"$log"
work=$(mktemp -d /tmp/gpu_step.XXXXXX)
trap 'rm -rf "$work"' EXIT
say() { echo "$*" | tee -a "$log"; }

# case -> "titan arguments|torch arguments|tokens per step|D L H Hkv F V T tied"
case_spec() {
  case $1 in
    1B) echo "--model.flavor 1B --training.local_batch_size 4|--dim 2048 --n-layers 16 --n-heads 32 --n-kv-heads 8 --ffn-dim 8192 --vocab-size 128256 --batch-size 4 --rope-factor 32 --weight-tying|8192|2048 16 32 8 8192 128256 2048 1" ;;
    8B-slice) echo "--model.flavor 8B --model.n_layers 4 --training.local_batch_size 2|--dim 4096 --n-layers 4 --n-heads 32 --n-kv-heads 8 --ffn-dim 14336 --vocab-size 128256 --batch-size 2 --rope-factor 8|4096|4096 4 32 8 14336 128256 2048 0" ;;
    *) return 1 ;;
  esac
}

say "== GPU training step: titan.cpp vs PyTorch eager / compiled, $(date -u +%FT%TZ)"
say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"
timeout 120 "$python" "$root/tools/bench/torch_gpu_step.py" gemm --json "$work/gemm.json" 2>&1 | tee -a "$log"

for c in "${cases[@]}"; do
  spec=$(case_spec "$c") || { say "gpu_step: unknown case $c"; continue; }
  IFS='|' read -r titan_args torch_args tokens shape <<<"$spec"
  say "-- $c"
  if [ -x "$exe" ]; then
    # shellcheck disable=SC2086
    timeout -k 5 "$limit" "$exe" $titan_args --training.seq_len 2048 --training.dataset synthetic \
      --training.steps $((steps + warmup)) --training.mixed_precision_param bfloat16 \
      --activation_checkpoint.mode none \
      --metrics.log_freq 1 --metrics.peak_tflops "$peak" --job.dump_folder "$work/titan_$c" \
      >"$work/titan_$c.log" 2>&1
    rc=$?
    grep -E 'step: ' "$work/titan_$c.log" | tail -n 3 | tee -a "$log"
    [ $rc -eq 0 ] || { say "titan-train $c failed (exit $rc):"; tail -n 15 "$work/titan_$c.log" | tee -a "$log"; }
  else
    say "titan-train not in the bundle ($exe): rebuild with TITAN_GPU_TARGETS=\"cuda_tests titan-train\""
  fi
  for mode in eager compile; do
    # shellcheck disable=SC2086
    timeout -k 5 "$limit" "$python" "$root/tools/bench/torch_gpu_step.py" step $torch_args \
      --seq-len 2048 --steps "$steps" --warmup "$warmup" --mode "$mode" \
      --json "$work/torch_${c}_$mode.json" 2>&1 | tail -n 3 | tee -a "$log"
  done
  echo "$c|$tokens|$shape" >>"$work/cases.txt"
done

# The table: tokens/s per GPU, MFU against the datasheet peak and the measured GEMM rate.
"$python" - "$work" "$warmup" "$peak" >"$out/gpu_step.md" <<'PY'
import json, os, statistics, sys
work, warmup, peak = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None
gemm = load(os.path.join(work, "gemm.json"))
gemm_tflops = gemm["tflops"] if gemm else None
print(f"GPU: {gemm['device'] if gemm else 'unknown'}; bf16 GEMM 8192^3 measured "
      f"{gemm_tflops:.0f} TFLOP/s" if gemm else "GPU: GEMM rate not measured")
print()
print("| case | side | tokens/s | MFU (peak {:.0f}) | MFU (measured GEMM) | vs compiled |".format(peak))
print("| --- | --- | --- | --- | --- | --- |")
for line in open(os.path.join(work, "cases.txt")):
    name, tokens, shape = line.strip().split("|")
    D, L, H, Hkv, F, V, T, tied = map(int, shape.split())
    hd = D // H
    layer = D * H * hd + 2 * D * Hkv * hd + H * hd * D + 3 * D * F + 2 * D
    # torchtitan's count: 6 x (parameters - embedding) + 12 L H hd T; a tied output
    # projection shares the embedding's weight and so is not counted, as in torchtitan.
    flops = 6 * (L * layer + D + (0 if tied else V * D)) + 12 * L * H * hd * T
    sides = {}
    metrics = os.path.join(work, f"titan_{name}", "metrics.jsonl")
    if os.path.exists(metrics):
        rows = [json.loads(l) for l in open(metrics) if l.strip()]
        tps = [r["tps"] for r in rows if r["step"] > warmup]
        if tps:
            sides["titan.cpp"] = statistics.median(tps)
    for mode in ("eager", "compile"):
        r = load(os.path.join(work, f"torch_{name}_{mode}.json"))
        if r:
            sides[f"PyTorch {mode}"] = r["tokens_per_s"]
    compiled = sides.get("PyTorch compile")
    for side in ("titan.cpp", "PyTorch eager", "PyTorch compile"):
        if side not in sides:
            print(f"| {name} | {side} | failed | | | |")
            continue
        tps = sides[side]
        mfu = 100 * flops * tps / (peak * 1e12)
        mfu_gemm = f"{100 * flops * tps / (gemm_tflops * 1e12):.1f}%" if gemm_tflops else ""
        ratio = f"{tps / compiled:.2f}x" if compiled else ""
        print(f"| {name} | {side} | {tps:.0f} | {mfu:.1f}% | {mfu_gemm} | {ratio} |")
PY
cat "$out/gpu_step.md" | tee -a "$log"

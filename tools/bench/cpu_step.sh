#!/usr/bin/env bash
# CPU training step: titan.cpp against PyTorch eager, same model, batch and threads, in one
# run on this machine (docs/performance.md, "CPU training step").
#
#   tools/bench/cpu_step.sh                 dim 512, 8 layers, 8 heads, 4 kv heads, ffn 1536,
#                                           vocab 32,000, batch 4 x seq 512 (58M parameters)
#   STEPS=4 WARMUP=1 tools/bench/cpu_step.sh
#   BF16=1 tools/bench/cpu_step.sh          also titan.cpp in bf16 mixed precision
#                                           (training.mixed_precision_param bfloat16 given;
#                                           needs AVX512_BF16), against both fp32 runs
#
# Each side trains STEPS steps of synthetic tokens (forward, backward, clipping, AdamW) in
# fp32 with no activation checkpointing; the first WARMUP steps are left out and the median
# of the rest is reported. titan.cpp's figure is its own metrics.jsonl (tokens/s between
# step lines); PyTorch's is tools/reference/llama3_reference.py bench (Debian's
# python3-torch, run as /usr/bin/python3). MFU = torchtitan's FLOPs per token x tokens/s
# divided by the sgemm rate titan.cpp's CPU GEMM library (oneDNN, or OpenBLAS in builds
# without it) reaches on this machine with the same threads: measured before and after the
# two sides, the higher taken.
#
# Environment: STEPS (6), WARMUP (2), THREADS (2), TITAN_BUILD_DIR (build), TORCH_PYTHON
# (/usr/bin/python3), KEEP=1 keeps the logs; DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB, SEQ,
# BATCH change the model (quick checks). Takes about 2-4 minutes on the 2-core machine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${TITAN_BUILD_DIR:-$root/build}
exe=$build_dir/apps/titan-train
python=${TORCH_PYTHON:-/usr/bin/python3}
steps=${STEPS:-6}
warmup=${WARMUP:-2}
threads=${THREADS:-2}
dim=${DIM:-512} layers=${LAYERS:-8} heads=${HEADS:-8} kv_heads=${KV_HEADS:-4}
ffn=${FFN:-1536} vocab=${VOCAB:-32000} seq=${SEQ:-512} batch=${BATCH:-4}

if [ ! -x "$exe" ]; then
  echo "cpu_step: $exe not found: build first (cmake --build $build_dir)" >&2
  exit 2
fi
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "cpu_step: $python has no torch: tools/setup.sh --with-torch installs Debian's python3-torch" >&2
  exit 2
fi
if [ "$steps" -le "$warmup" ]; then
  echo "cpu_step: STEPS ($steps) must exceed WARMUP ($warmup)" >&2
  exit 2
fi

# Debian 12's OpenBLAS runs generic kernels on AVX-512 CPUs it does not know (docs/design.md,
# "Threads and BLAS"). OpenBLAS reads this when it loads, so it is set here, for both sides.
coretype_note="unset"
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  coretype_note="$OPENBLAS_CORETYPE (from the environment)"
elif grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
  coretype_note="SKYLAKEX (set here: AVX-512 CPU)"
fi
# Both sides get the same threads: OpenMP (titan.cpp's ops and its OpenMP OpenBLAS; torch's
# ATen) and OpenBLAS's own pool (torch links the pthread flavour of the same OpenBLAS).
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

work=$(mktemp -d /tmp/cpu_step.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then
  echo "cpu_step: logs kept in $work"
else
  trap 'rm -rf "$work"' EXIT
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "== CPU training step: titan.cpp vs PyTorch eager"
echo "machine:   $cpu, $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model:     llama3 dim $dim, $layers layers, $heads heads, $kv_heads kv heads, ffn $ffn," \
     "vocab $vocab; batch $batch x seq $seq; fp32, synthetic tokens, no activation checkpointing"
echo "steps:     $steps per side, median of steps $((warmup + 1))..$steps"
echo "threads:   $threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS); OPENBLAS_CORETYPE $coretype_note"
load_before=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load_before" 'BEGIN { exit !(l > 1.0) }'; then
  echo "warning:   load average $load_before before starting: another job shares the cores and" \
       "the figures will be low and noisy"
fi

# The GEMM library and its sgemm rate (1024^3, best of 3), and the core OpenBLAS chose, as
# titan-train reports them.
"$exe" --version > "$work/version.txt"
gemm_line=$(grep '^GEMM:' "$work/version.txt" || true)
sgemm=$(sed -n 's/.*sgemm \([0-9.]*\) GFLOP\/s.*/\1/p' <<< "$gemm_line")
gemm_library=$(sed -n 's/^GEMM: \([^,]*\),.*/\1/p' <<< "$gemm_line")
echo "titan $(grep '^BLAS:' "$work/version.txt" || true)"
echo "titan GEMM: ${gemm_line#GEMM: }"
if [ -z "$sgemm" ]; then
  echo "cpu_step: no sgemm rate in '$exe --version'" >&2
  exit 1
fi

# run_titan NAME [ARGS...]: titan-train on the benchmark model into $work/NAME.
run_titan() {
  local name=$1
  shift
  "$exe" --model.flavor tiny --model.dim "$dim" --model.n_layers "$layers" \
    --model.n_heads "$heads" --model.n_kv_heads "$kv_heads" --model.ffn_dim "$ffn" \
    --model.vocab_size "$vocab" --training.seq_len "$seq" --training.local_batch_size "$batch" \
    --training.dataset synthetic --activation_checkpoint.mode none --training.steps "$steps" \
    --metrics.log_freq 1 --job.dump_folder "$work/$name" "$@" > "$work/$name.log" 2>&1 ||
    { cat "$work/$name.log" >&2; echo "cpu_step: titan-train failed" >&2; exit 1; }
  grep -E 'step: |FLOPs per token|mixed precision' "$work/$name.log" |
    sed 's/^\[titan [0-9:]*\] /   /'
  echo "   load average $(cut -d' ' -f1-3 /proc/loadavg)"
}
echo "-- titan.cpp ($exe)"
run_titan titan
if [ "${BF16:-0}" = 1 ]; then
  echo "-- titan.cpp, bf16 mixed precision"
  run_titan titan_bf16 --training.mixed_precision_param bfloat16
fi

echo "-- PyTorch eager ($python, tools/reference/llama3_reference.py bench)"
"$python" "$root/tools/reference/llama3_reference.py" bench --dim "$dim" --n-layers "$layers" \
  --n-heads "$heads" --n-kv-heads "$kv_heads" --ffn-dim "$ffn" --vocab-size "$vocab" \
  --seq-len "$seq" --batch-size "$batch" --steps "$steps" --warmup "$warmup" \
  --threads "$threads" --json "$work/torch.json" | sed 's/^/   /'
echo "   load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The sgemm rate again, after both sides: on a shared machine one measurement can run slow
# (an MFU over 100%), so the MFU uses the higher of the two.
sgemm_after=$("$exe" --version | sed -n 's/^GEMM: .*sgemm \([0-9.]*\) GFLOP\/s.*/\1/p')
echo "sgemm:     $sgemm GFLOP/s before, ${sgemm_after:-?} after"
sgemm=$(awk -v a="$sgemm" -v b="${sgemm_after:-0}" 'BEGIN { print (b > a ? b : a) }')

# Summary. FLOPs per token are torchtitan's: 6 x (parameters - embedding) + 12 L H hd T
# (the output projection counts, the embedding lookup does not).
"$python" - "$work/titan/metrics.jsonl" "$work/torch.json" "$warmup" "$sgemm" \
  "$dim" "$layers" "$heads" "$kv_heads" "$ffn" "$vocab" "$seq" "$gemm_library" \
  "$work/titan_bf16/metrics.jsonl" <<'EOF'
import json, os, statistics, sys
metrics, torch_json, warmup, sgemm = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
D, L, H, Hkv, F, V, T = map(int, sys.argv[5:12])
gemm_library = sys.argv[12]
bf16_metrics = sys.argv[13]
hd = D // H
def median_tps(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return statistics.median(r["tps"] for r in rows if r["step"] > warmup)
titan = median_tps(metrics)
peer = json.load(open(torch_json))
torch_tps = peer["tokens_per_s"]
layer = D * H * hd + 2 * D * Hkv * hd + H * hd * D + 3 * D * F + 2 * D
flops_per_token = 6 * (L * layer + D + V * D) + 12 * L * H * hd * T
def mfu(tps):
    return flops_per_token * tps / (sgemm * 1e9)
print("== summary")
print(f"sgemm rate:        {sgemm:.1f} GFLOP/s ({gemm_library}, {peer['threads']} threads; "
      "the MFU peak)")
print(f"FLOPs per token:   {flops_per_token:.4g} (torchtitan's count)")
print(f"titan.cpp:         {titan:8.1f} tokens/s  {flops_per_token * titan / 1e9:6.1f} GFLOP/s  "
      f"MFU {100 * mfu(titan):.1f}%")
print(f"PyTorch {peer['torch_version']}: {torch_tps:8.1f} tokens/s  "
      f"{flops_per_token * torch_tps / 1e9:6.1f} GFLOP/s  MFU {100 * mfu(torch_tps):.1f}%"
      f"  (BLAS {peer['blas'].split(' (')[0]})")
print(f"titan / PyTorch:   {titan / torch_tps:.2f}x")
if os.path.exists(bf16_metrics):
    bf16 = median_tps(bf16_metrics)
    print(f"titan.cpp bf16:    {bf16:8.1f} tokens/s  {flops_per_token * bf16 / 1e9:6.1f} GFLOP/s  "
          f"(MFU against the fp32 sgemm rate {100 * mfu(bf16):.1f}%)")
    print(f"titan bf16 / PyTorch fp32: {bf16 / torch_tps:.2f}x   "
          f"titan bf16 / titan fp32: {bf16 / titan:.2f}x")
EOF

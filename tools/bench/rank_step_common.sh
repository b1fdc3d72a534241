# Sourced by the step benchmarks that compare ranks against one rank (fsdp_step.sh,
# tp_step.sh, pp_step.sh, cp_step.sh): checks the tools, sets the model and run variables,
# makes the work folder and prints the header. Before sourcing, the script sets `bench` (its
# name), `np` and `title`.
#
# Sets: root, exe, steps, warmup, dim .. batch (from the environment, defaults: the 58M
# model), work (removed on exit unless KEEP=1), model_args (titan-train's flags for them),
# and run_side (below).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${TITAN_BUILD_DIR:-$root/build}
exe=$build_dir/apps/titan-train
steps=${STEPS:-6} warmup=${WARMUP:-2}
dim=${DIM:-512} layers=${LAYERS:-8} heads=${HEADS:-8} kv_heads=${KV_HEADS:-4}
ffn=${FFN:-1536} vocab=${VOCAB:-32000} seq=${SEQ:-512} batch=${BATCH:-4}

if [ ! -x "$exe" ]; then
  echo "$bench: $exe not found: build first (cmake --build $build_dir)" >&2
  exit 2
fi
if ! command -v mpirun >/dev/null; then
  echo "$bench: mpirun not found (tools/setup.sh installs Open MPI)" >&2
  exit 2
fi
if [ $((batch % np)) -ne 0 ] || [ "$steps" -le "$warmup" ]; then
  echo "$bench: BATCH ($batch) must divide by $np ranks and STEPS ($steps) exceed WARMUP" \
       "($warmup)" >&2
  exit 2
fi
# OpenBLAS reads its core type when it loads (docs/design.md, "Threads and BLAS").
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SKYLAKEX
fi
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

work=$(mktemp -d "/tmp/$bench.XXXXXX")
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

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "== $title"
echo "machine:   $cpu, $(nproc) cores;" \
     "load average $(cut -d' ' -f1-3 /proc/loadavg); OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-unset}"
echo "model:     llama3 dim $dim, $layers layers, $heads heads, $kv_heads kv heads, ffn $ffn," \
     "vocab $vocab; global batch $batch x seq $seq; fp32, synthetic tokens"
echo "steps:     $steps per side, median of steps $((warmup + 1))..$steps"

# run_side NAME RANKS ARGS...: one side, titan-train with the model's flags and ARGS on
# RANKS ranks x 1 thread (1 rank: x np threads, or SIDE_THREADS), its log in $work/NAME.log
# and its metrics in $work/NAME/; its mesh and step lines echoed.
run_side() {
  local name=$1 ranks=$2
  shift 2
  echo "-- $name"
  if [ "$ranks" = 1 ]; then
    local threads=${SIDE_THREADS:-$np}  # a script may leave cores free
    OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads "$exe" "${model_args[@]}" "$@" \
      --job.dump_folder "$work/$name" > "$work/$name.log" 2>&1 ||
      { cat "$work/$name.log" >&2; echo "$bench: $name failed" >&2; exit 1; }
  else
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpirun --oversubscribe -np "$ranks" \
      -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS "$exe" "${model_args[@]}" "$@" \
      --job.dump_folder "$work/$name" > "$work/$name.log" 2>&1 ||
      { cat "$work/$name.log" >&2; echo "$bench: $name failed" >&2; exit 1; }
  fi
  grep -E 'mesh: |step: ' "$work/$name.log" | sed 's/^\[titan [0-9:]*\] /   /'
}

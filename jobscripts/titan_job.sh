# Sourced by the templates in jobscripts/ (not run on its own). What every launch does:
#   titan_job_setup       the environment a multi-node job needs (OpenBLAS core, Open MPI)
#   titan_check_world N [cpu]
#                         the config's parallelism degrees (with the template's overrides)
#                         must multiply to N ranks, and one rank's memory plan (titan-plan
#                         memory) must fit a GPU of TITAN_GPU_MEMORY_GIB (default 80), or with
#                         `cpu` the node's memory shared by its ranks; else exits 2 before
#                         launching
#   titan_run_step CMD..  runs the job step in the background and waits, so that the USR1
#                         trap can run (Slurm's --signal=B:USR1@<s> reaches only this
#                         script): the trap forwards USR1 to the step, whose ranks stop after
#                         a step with a checkpoint and exit 0, then requeues the job when
#                         training has not reached its last step; the next start resumes
#                         from the same dump folder
# The template sets before sourcing: TITAN_ROOT (the checkout), CONFIG_FILE, and OVERRIDES
# (an array of --section.key value arguments, may be empty). TITAN_CHECK_ONLY=1 stops
# before the launch (the tests' way to check a template's degrees).
# shellcheck shell=bash

TITAN_EXE=${TITAN_EXE:-$TITAN_ROOT/build/apps/titan-train}

titan_job_setup() {
  [ -x "$TITAN_EXE" ] || { echo "titan_job: $TITAN_EXE not found: build first" >&2; exit 2; }
  # Debian's OpenBLAS runs generic kernels on AVX-512 CPUs it does not know
  # (docs/design.md, "Threads and BLAS"); it reads this when it loads.
  if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    export OPENBLAS_CORETYPE=SKYLAKEX
  fi
  # One thread per rank on GPU nodes unless the template says otherwise.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
}

# The config's degrees (after OVERRIDES) against the ranks this job starts. dp_shard -1
# takes what the others leave, so it must divide; the trainer checks the same and exits 2,
# but only after every rank has started.
titan_check_world() {
  local ranks=$1 printed product=1 shard=1 key value
  printed=$("$TITAN_EXE" --config "$CONFIG_FILE" "${OVERRIDES[@]}" --print-config) || exit 2
  for key in data_parallel_replicate_degree tensor_parallel_degree pipeline_parallel_degree \
             context_parallel_degree data_parallel_shard_degree; do
    value=$(printf '%s\n' "$printed" | sed -n "s/^  $key: \(-\{0,1\}[0-9]*\)$/\1/p")
    if [ "$key" = data_parallel_shard_degree ]; then
      shard=$value
    else
      product=$((product * value))
    fi
  done
  if [ "$shard" = -1 ]; then
    if [ $((ranks % product)) -ne 0 ]; then
      echo "titan_job: $ranks ranks do not divide by the other degrees' product $product" \
           "($CONFIG_FILE ${OVERRIDES[*]}); change the nodes or the degrees" >&2
      exit 2
    fi
    shard=$((ranks / product))
  fi
  if [ $((product * shard)) -ne "$ranks" ]; then
    echo "titan_job: the degrees multiply to $((product * shard)), the job starts $ranks ranks" \
         "($CONFIG_FILE ${OVERRIDES[*]}); change the nodes or the degrees" >&2
    exit 2
  fi
  echo "titan_job: $ranks ranks = the degrees of $CONFIG_FILE (dp_shard $shard)"
  # The trainer makes the same check, but only after every rank has started.
  local plan_exe verdict
  local target=(--device-memory-gib "${TITAN_GPU_MEMORY_GIB:-80}")
  [ "${2:-}" = cpu ] && target=(--device cpu --ranks-per-host "$SLURM_NTASKS_PER_NODE")
  plan_exe=$(dirname "$TITAN_EXE")/titan-plan
  verdict=$("$plan_exe" memory --config "$CONFIG_FILE" --world-size "$ranks" "${target[@]}" \
            "${OVERRIDES[@]}" | tail -n 1) || exit 2
  echo "titan_job: memory per rank: $verdict"
  case $verdict in
    "does not fit"*) echo "titan_job: $verdict" >&2; exit 2 ;;
  esac
}

titan_run_step() {
  if [ "${TITAN_CHECK_ONLY:-0}" = 1 ]; then  # tests: the checks ran; show the step, stop
    echo "titan_job: would run: $*"
    exit 0
  fi
  # The step's output goes to TITAN_STEP_LOG (appended across requeues): the trap reads it.
  : "${TITAN_STEP_LOG:?set TITAN_STEP_LOG before titan_run_step}"
  echo "titan_job: step output in $TITAN_STEP_LOG"
  "$@" >>"$TITAN_STEP_LOG" 2>&1 &
  titan_step_pid=$!
  trap titan_on_usr1 USR1
  wait "$titan_step_pid"
  local code=$?
  trap - USR1
  return "$code"
}

titan_on_usr1() {
  echo "titan_job: USR1: asking the ranks to save and stop"
  kill -USR1 "$titan_step_pid" 2>/dev/null || true
  wait "$titan_step_pid"
  local code=$?
  # The ranks exit 0 after saving; requeue unless training finished meanwhile.
  if [ "$code" -eq 0 ] && grep -q "stopped on SIGUSR1" "$TITAN_STEP_LOG" \
      && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "titan_job: requeueing job $SLURM_JOB_ID; the next start resumes from the checkpoint"
    scontrol requeue "$SLURM_JOB_ID"
  fi
  exit "$code"
}

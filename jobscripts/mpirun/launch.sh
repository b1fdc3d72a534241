#!/bin/bash
# titan-train on machines without a scheduler: mpirun over a hostfile, one rank per GPU.
#   jobscripts/mpirun/launch.sh HOSTFILE NODES [--section.key value ...]
# HOSTFILE lists the nodes, one per line with its slots (jobscripts/mpirun/hostfile.example).
# CONFIG_FILE picks the config (default configs/llama3_8b.yaml); TITAN_ROOT the checkout.
# A USR1 to this script's mpirun (kill -USR1 <pid>) reaches every rank: they save after the
# current step and exit 0; run the same command again to resume.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,7p' "$0" >&2; exit 2; }
hostfile=$1 nodes=$2
shift 2
TITAN_ROOT=${TITAN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CONFIG_FILE=${CONFIG_FILE:-$TITAN_ROOT/configs/llama3_8b.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
OVERRIDES=("$@")
# shellcheck source=jobscripts/titan_job.sh
source "$TITAN_ROOT/jobscripts/titan_job.sh"
titan_job_setup
titan_check_world "$((nodes * GPUS_PER_NODE))"
# --map-by ppr:8:node: 8 ranks per node, consecutive ranks on one node (tp's groups are the
#   innermost dim, so a tp group shares a node's NVLink).
# --bind-to none: each rank picks its GPU by local rank; binding cores is the site's choice.
# -x: the variables every rank needs; NCCL_* and UCX_* are read by NCCL and Open MPI's
#   transports on each node, OMP_NUM_THREADS and OPENBLAS_CORETYPE by the ranks.
# --mca btl_tcp_if_include / NCCL_SOCKET_IFNAME: the interface between nodes (edit).
exec mpirun --hostfile "$hostfile" -np "$((nodes * GPUS_PER_NODE))" \
  --map-by "ppr:$GPUS_PER_NODE:node" --bind-to none \
  -x OMP_NUM_THREADS -x OPENBLAS_CORETYPE -x NCCL_DEBUG=WARN \
  -x NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-^lo,docker}" \
  --mca btl_tcp_if_exclude lo,docker0 \
  "$TITAN_EXE" --config "$CONFIG_FILE" "${OVERRIDES[@]}"

#!/usr/bin/env bash
# A one-node Slurm of this machine for the tests, from Debian's packages (tools/setup.sh
# --with-slurm), no systemd: munge, slurmctld and slurmd with every file under one folder.
#   tools/slurm/local_slurm.sh start DIR    brings it up; prints `export SLURM_CONF=...`
#   tools/slurm/local_slurm.sh stop DIR     stops the daemons by their pid files
# Every Slurm command needs SLURM_CONF=DIR/etc/slurm.conf. The configuration is what a test
# needs and no more: one partition `debug`, pmix as the MPI plug-in, requeue allowed, a
# 10 s credential lifetime and 1 s scheduler intervals so that a requeued job restarts in
# about 11 s (not ~135 s), process tracking by process group.
set -euo pipefail
action=${1:-} dir=${2:-}
if [ -z "$action" ] || [ -z "$dir" ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop() {
  local pidfile
  for pidfile in "$dir/run/slurmd.pid" "$dir/run/slurmctld.pid" "$dir/munge/munged.pid"; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
}

case $action in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "local_slurm: unknown action $action (start or stop)" >&2; exit 2 ;;
esac
for tool in munged mungekey slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || {
    echo "local_slurm: $tool not found: tools/setup.sh --with-slurm installs Slurm" >&2
    exit 2
  }
done

mkdir -p "$dir/munge" "$dir/etc" "$dir/spool/ctld" "$dir/spool/d" "$dir/log" "$dir/run"
chmod 755 "$dir" "$dir/munge"  # munged refuses a socket folder others cannot enter
[ -f "$dir/munge/munge.key" ] || mungekey --create --keyfile="$dir/munge/munge.key"
munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
  --seed-file="$dir/munge/munge.seed"

host=$(hostname -s)
cat >"$dir/etc/slurm.conf" <<CONF
ClusterName=titan-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SlurmdParameters=config_overrides
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
CONF
export SLURM_CONF=$dir/etc/slurm.conf
slurmctld -c
slurmd -c
for _ in $(seq 100); do
  if [ "$(sinfo -h -n "$host" -o %t 2>/dev/null)" = idle ]; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.1
done
echo "local_slurm: the node did not become idle in 10 s (logs in $dir/log)" >&2
stop
exit 1

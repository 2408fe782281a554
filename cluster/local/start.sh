#!/usr/bin/env bash
# Starts a real single-node SLURM cluster on loopback, for tests and for
# trying `atelier submit` without a cluster:
#
#   cluster/local/start.sh DIR        # munged, slurmctld, slurmd under DIR
#   export SLURM_CONF=DIR/slurm.conf  # point sbatch/squeue/scancel at it
#   cluster/local/stop.sh DIR         # stops the three daemons by their PIDs
#
# Everything lives under DIR: its own munge key and socket, slurm.conf with
# this machine's CPUs and memory, state and spool directories, logs, and one
# PID file per daemon. Nothing under /etc is used, so it does not disturb a
# system SLURM or munge. The daemons run as the current user, which must be
# root (slurmd starts jobs as their submitting user). Debian packages:
# slurm-wlm munge. Exits non-zero, saying why, if the node does not come up
# idle within 60 s; whatever was started is stopped again.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "$0: must run as root (slurmd runs jobs as their user)" >&2; exit 2; }
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "$0: $tool not found: apt-get install slurm-wlm munge" >&2; exit 2; }
done

dir=$(mkdir -p "$1" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
if [ -e "$dir/slurmctld.pid" ] || [ -e "$dir/slurmd.pid" ] || [ -e "$dir/munged.pid" ]; then
  "$here/stop.sh" "$dir"  # a cluster left behind by an interrupted run
fi
rm -rf "${dir:?}/munge" "$dir/state" "$dir/spool" "$dir/log"
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 700 "$dir/munge"

# A TCP port nobody listens on on loopback, from $1 upwards (a connection
# that succeeds means the port is taken).
free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}
ctld_port=$(free_port 16817)
slurmd_port=$(free_port $((ctld_port + 1)))

cpus=$(nproc)
# Slightly less than the machine has: slurmd drains a node that reports
# less memory than slurm.conf claims.
memory_mb=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)

cat >"$dir/slurm.conf" <<EOF
# A one-node cluster on loopback, written by cluster/local/start.sh.
ClusterName=atelier-local
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays the restart of a requeued job (120 s by default).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd.daemon.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# Look at pending jobs every second: a requeued job becomes eligible when its
# begin time passes, which is no event that would wake the scheduler.
SchedulerParameters=sched_interval=1
JobRequeue=1
ReturnToService=2
MpiDefault=none
KillWait=10
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

# Each daemon runs in the foreground of its own session, so $! is its PID.
start() {
  local name=$1
  shift
  setsid "$@" >"$dir/log/$name.out" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

failed() {
  echo "$0: $1; logs in $dir/log" >&2
  tail -n 20 "$dir"/log/*.log "$dir"/log/*.out 2>/dev/null >&2 || true
  "$here/stop.sh" "$dir" || true
  exit 1
}

dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
start munged munged --foreground --force --key-file="$dir/munge/munge.key" \
  --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
  --seed-file="$dir/munge/munged.seed" --log-file="$dir/log/munged.log"
for _ in $(seq 100); do [ -S "$dir/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$dir/munge/munge.socket" ] || failed "munged did not create its socket"

export SLURM_CONF="$dir/slurm.conf"
start slurmctld slurmctld -D -i -f "$SLURM_CONF"
start slurmd slurmd -D -N localhost -f "$SLURM_CONF"

for _ in $(seq 600); do
  state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
  [ "$state" = "idle" ] && break
  for daemon in munged slurmctld slurmd; do
    kill -0 "$(cat "$dir/$daemon.pid")" 2>/dev/null || failed "$daemon exited"
  done
  sleep 0.1
done
[ "$state" = "idle" ] || failed "node not idle after 60 s (state: '${state:-unknown}')"
echo "SLURM is up: export SLURM_CONF=$SLURM_CONF  (stop: $here/stop.sh $dir)"

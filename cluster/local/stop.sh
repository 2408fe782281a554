#!/usr/bin/env bash
# Stops the cluster that cluster/local/start.sh DIR started: cancels the
# jobs still in it (slurmd leaves their processes running when it stops),
# then SIGTERM to each daemon by the PID recorded in DIR, SIGKILL to any
# still alive 10 s later.
set -uo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1

if [ -f "$dir/slurm.conf" ] && [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
  export SLURM_CONF="$dir/slurm.conf"
  jobs=$(squeue -h -o %i 2>/dev/null)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086 # one job id per word
    scancel $jobs 2>/dev/null
    for _ in $(seq 300); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi

pids=()
for daemon in slurmd slurmctld munged; do
  file="$dir/$daemon.pid"
  [ -f "$file" ] || continue
  pid=$(cat "$file")
  # Only a process that is still that daemon: PIDs get reused.
  if [ -n "$pid" ] && grep -qx "$daemon" "/proc/$pid/comm" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  fi
  rm -f "$file"
done

for _ in $(seq 100); do
  alive=()
  for pid in ${pids[@]+"${pids[@]}"}; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
  [ ${#alive[@]} -eq 0 ] && exit 0
  sleep 0.1
done
for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null; done
exit 0

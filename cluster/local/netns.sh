#!/usr/bin/env bash
# Two "hosts" on one machine, for multi-node runs without a cluster: two Linux
# network namespaces joined by a veth pair, so that MPI and the loader service
# really cross a network interface.
#
#   cluster/local/netns.sh up NAME          # hosts NAME-a and NAME-b (10.77.N.1 and .2)
#   cluster/local/netns.sh exec NAME a|b CMD...
#                                           # run CMD on one host
#   cluster/local/netns.sh mpirun NAME -np N [mpirun args] CMD...
#                                           # mpirun on NAME-a, rank r on NAME-a when r
#                                           # is even, on NAME-b when it is odd
#   cluster/local/netns.sh down NAME        # stop what runs there, delete both hosts
#
# Each host is a namespace named after it, with loopback and one end of the
# veth pair (NAME-va, NAME-vb) in a private /24 that no interface or route of
# this machine uses (the first free 10.77.N.0/24). `ip netns exec` gives each
# its own /etc/hosts (/etc/netns/<host>/hosts: this machine's, plus both host
# names), so `NAME-b:7000` means the same on either host. The file system, the
# processes' view of each other and the host name (`hostname`) stay shared:
# only the network is split. NAME: up to 12 letters, digits or dashes.
#
# `mpirun` runs OpenMPI's mpirun on NAME-a with --host NAME-a:S,NAME-b:S (S =
# half the cores, at least 1), --map-by node, --mca plm_rsh_agent "netns.sh
# agent NAME" (what ssh would be: it starts OpenMPI's daemon on the other host
# with `ip netns exec`), --mca btl tcp,self and btl_tcp_if_include /
# oob_tcp_if_include set to the veth's /24, so every MPI message and OpenMPI's
# own wiring go over the veth. --oversubscribe is added when N exceeds 2 S.
#
# Needs root and iproute2's `ip` (Debian: iproute2; OpenMPI: openmpi-bin).
# Exit status: 0 success, 2 bad usage, 77 this machine cannot make network
# namespaces (not root, no `ip`, no permission: tests skip on it), 1 anything
# else, with a message saying what failed.
set -euo pipefail

self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
marker="# written by cluster/local/netns.sh"

usage() {
  echo "usage:" >&2
  sed -n '6,12p' "$self" | sed 's/^#//' >&2
  exit 2
}
fail() { echo "netns.sh: $*" >&2; exit 1; }
cannot() { echo "netns.sh: cannot make network namespaces here: $*" >&2; exit 77; }

check_name() {
  [[ "$1" =~ ^[A-Za-z][A-Za-z0-9-]{0,11}$ ]] ||
    { echo "netns.sh: bad NAME '$1': 1 to 12 letters, digits or dashes, starting with a letter" \
        "(the veth ends NAME-va and NAME-vb must fit Linux's 15-character interface names)" >&2; exit 2; }
  name=$1
  host_a=$name-a host_b=$name-b
  veth_a=$name-va veth_b=$name-vb
}

check_root() {
  [ "$(id -u)" -eq 0 ] || cannot "must run as root (ip netns add and ip netns exec need CAP_SYS_ADMIN)"
  command -v ip >/dev/null || cannot "iproute2's ip not found: apt-get install iproute2"
}

exists() { [ -e "/run/netns/$1" ]; }

require_up() {
  if ! exists "$host_a" || ! exists "$host_b"; then
    fail "hosts $host_a and $host_b are not up: run $self up $name first"
  fi
}

# The first 10.77.N.0/24 that no address or route of this machine is in.
free_subnet() {
  local taken n
  taken=$(ip -4 -o addr show; ip -4 route show table all)
  for n in $(seq 0 255); do
    grep -q "10\.77\.$n\." <<<"$taken" || { echo "10.77.$n"; return; }
  done
  fail "no free 10.77.N.0/24 subnet: every one is in use on this machine"
}

# The veth's network as CIDR (10.77.N.0/24), read from host a.
veth_network() {
  local cidr
  cidr=$(ip -n "$host_a" -4 -o addr show dev "$veth_a" | awk '{ print $4 }')
  [[ "$cidr" =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.[0-9]+/24$ ]] ||
    fail "no IPv4 address on $veth_a in $host_a (found '$cidr'): run $self up $name again"
  echo "${BASH_REMATCH[1]}.0/24"
}

# ip netns exec bind-mounts each file of /etc/netns/<host>/ over /etc/: one
# that netns.sh did not write is someone else's, and left alone.
refuse_foreign_etc() {
  local host
  for host in "$host_a" "$host_b"; do
    if [ -e "/etc/netns/$host" ] && ! grep -qF "$marker" "/etc/netns/$host/hosts" 2>/dev/null; then
      fail "/etc/netns/$host exists and was not written by netns.sh: remove it or choose another NAME"
    fi
  done
}

# /etc/netns/<host>/hosts: this machine's hosts file plus both hosts.
write_hosts() {
  local host=$1 subnet=$2 dir=/etc/netns/$1
  mkdir -p "$dir"
  {
    cat /etc/hosts
    echo "$marker up $name"
    echo "$subnet.1 $host_a"
    echo "$subnet.2 $host_b"
  } >"$dir/hosts"
}

# Stops the processes still in a namespace (ip netns del leaves them running,
# and with them the namespace and its veth): TERM, then KILL after 5 s.
stop_processes() {
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  echo "netns.sh: stopping processes still on $ns: $(tr '\n' ' ' <<<"$pids")" >&2
  # shellcheck disable=SC2086 # one PID per word
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(ip netns pids "$ns" 2>/dev/null || true)" ] && return 0
    sleep 0.1
  done
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
}

cmd_down() {
  local host
  for host in "$host_a" "$host_b"; do
    if exists "$host"; then
      stop_processes "$host"
      ip netns del "$host" || fail "ip netns del $host failed"
    fi
    if [ -d "/etc/netns/$host" ] && grep -qF "$marker" "/etc/netns/$host/hosts" 2>/dev/null; then
      rm -rf "/etc/netns/${host:?}"
    fi
  done
  rmdir /etc/netns 2>/dev/null || true  # only when nothing else is there
  # The veth pair goes with the namespaces: up creates its ends inside them.
}

cmd_up() {
  refuse_foreign_etc
  if exists "$host_a" || exists "$host_b" || [ -d "/etc/netns/$host_a" ] || [ -d "/etc/netns/$host_b" ]; then
    echo "netns.sh: removing $host_a/$host_b left by an earlier run" >&2
    cmd_down
  fi
  local subnet errors
  subnet=$(free_subnet)
  errors=$(ip netns add "$host_a" 2>&1) || cannot "ip netns add $host_a: $errors"
  # From here on a failure takes down whatever was made.
  trap 'cmd_down >/dev/null 2>&1 || true' EXIT
  ip netns add "$host_b"
  errors=$(ip link add "$veth_a" netns "$host_a" type veth peer name "$veth_b" netns "$host_b" 2>&1) ||
    cannot "ip link add ... type veth: $errors (is the veth kernel module available?)"
  ip -n "$host_a" addr add "$subnet.1/24" dev "$veth_a"
  ip -n "$host_b" addr add "$subnet.2/24" dev "$veth_b"
  local host
  for host in "$host_a" "$host_b"; do
    ip -n "$host" link set lo up
  done
  ip -n "$host_a" link set "$veth_a" up
  ip -n "$host_b" link set "$veth_b" up
  write_hosts "$host_a" "$subnet"
  write_hosts "$host_b" "$subnet"
  trap - EXIT
  echo "up: $host_a ($subnet.1, $veth_a) and $host_b ($subnet.2, $veth_b); down: $self down $name"
}

cmd_exec() {
  [ $# -ge 2 ] || usage
  local host
  case "$1" in
    a) host=$host_a ;;
    b) host=$host_b ;;
    *) echo "netns.sh exec: host must be a or b, not '$1'" >&2; exit 2 ;;
  esac
  shift
  require_up
  # exec all the way down: the command keeps this PID, so a caller can signal it.
  exec ip netns exec "$host" "$@"
}

# What mpirun runs instead of ssh: `netns.sh agent NAME HOST CMD...`, where
# CMD is a shell command line (OpenMPI quotes its arguments for a remote shell).
cmd_agent() {
  [ $# -ge 2 ] || usage
  local host=$1
  shift
  case "$host" in
    "$host_a" | "$host_b") ;;
    *) fail "agent: mpirun asked for host '$host', which is neither $host_a nor $host_b" ;;
  esac
  exec ip netns exec "$host" /bin/sh -c "$*"
}

cmd_mpirun() {
  if [ $# -lt 3 ] || { [ "$1" != -np ] && [ "$1" != -n ]; }; then
    echo "netns.sh mpirun: the arguments after NAME must be -np N, then mpirun's options and the command" >&2
    exit 2
  fi
  local ranks=$2
  [[ "$ranks" =~ ^[1-9][0-9]*$ ]] || { echo "netns.sh mpirun: -np needs a positive number, not '$ranks'" >&2; exit 2; }
  shift 2
  command -v mpirun >/dev/null || fail "mpirun not found: apt-get install openmpi-bin"
  # OpenMPI splits plm_rsh_agent on spaces (and alternatives on ':').
  [[ "$self" =~ [[:space:]:] ]] && fail "OpenMPI cannot run an agent at '$self' (a space or ':' in the path): move the checkout"
  require_up
  local network slots
  network=$(veth_network)
  slots=$(( ($(nproc) + 1) / 2 ))
  local hosts="$host_a:$slots,$host_b:$slots"
  local args=(-np "$ranks" --host "$hosts" --map-by node
    --mca plm_rsh_agent "$self agent $name"
    --mca btl "tcp,self" --mca btl_tcp_if_include "$network" --mca oob_tcp_if_include "$network"
    --allow-run-as-root)  # netns.sh runs as root only
  [ "$ranks" -gt $((2 * slots)) ] && args+=(--oversubscribe)
  exec ip netns exec "$host_a" mpirun "${args[@]}" "$@"
}

[ $# -ge 2 ] || usage
command=$1
check_name "$2"
shift 2
check_root
case "$command" in
  up) [ $# -eq 0 ] || usage; cmd_up ;;
  down) [ $# -eq 0 ] || usage; cmd_down ;;
  exec) cmd_exec "$@" ;;
  mpirun) cmd_mpirun "$@" ;;
  agent) cmd_agent "$@" ;;
  *) usage ;;
esac

#!/bin/sh
# Runs the communication benchmarks on 2 local ranks; extra arguments go to
# bench_comm (e.g. `allreduce --max-mb 64`). Usage: bench/comm_bench.sh BUILD [ARGS...]
set -eu
build=${1:?usage: bench/comm_bench.sh BUILD_DIR [ARGS...]}
shift
flags=""
[ "$(id -u)" = 0 ] && flags="--allow-run-as-root"
[ "$(nproc)" -lt 2 ] && flags="$flags --oversubscribe"
exec mpirun $flags -np 2 "$build/bench/bench_comm" "$@"

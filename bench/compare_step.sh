#!/usr/bin/env bash
# C++ vs Python training step of one model family: same architecture, batch,
# image size and intra-op threads, median of N steps each, both measured in
# this run and interleaved (C++, Python, C++, Python, ...) so machine noise
# hits both.
# Usage: bench/compare_step.sh adain|cyclegan [build-dir] [options of bench_step and <family>_step.py]
# PY_ARGS: extra options for the Python side only (e.g. PY_ARGS="--transposed-conv conv-gradient").
set -euo pipefail
cd "$(dirname "$0")/.."
family=${1:?usage: bench/compare_step.sh adain|cyclegan [build-dir] [options]}
shift
case $family in adain|cyclegan) ;; *) echo "unknown family '$family' (adain, cyclegan)" >&2; exit 2 ;; esac
build=build
if [ $# -gt 0 ] && [[ $1 != --* ]]; then build=$1; shift; fi
rounds=${ROUNDS:-3}
cpp=(); py=()
for _ in $(seq "$rounds"); do
  cpp+=("$("$build/bench/bench_step" --family "$family" "$@" | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')")
  # shellcheck disable=SC2086  # PY_ARGS is a list of words
  py+=("$(/usr/bin/python3 "bench/${family}_step.py" "$@" ${PY_ARGS:-} | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')")
done
/usr/bin/python3 - "${cpp[*]}" "${py[*]}" "$family $* ${PY_ARGS:+(python: $PY_ARGS)}" <<'PY'
import statistics, sys
cpp = [float(x) for x in sys.argv[1].split()]
py = [float(x) for x in sys.argv[2].split()]
c, p = statistics.median(cpp), statistics.median(py)
print(f"{sys.argv[3]}")
print(f"  cpp    median_ms={c:.1f}  rounds={cpp}")
print(f"  python median_ms={p:.1f}  rounds={py}")
print(f"  ratio python/cpp = {p / c:.3f}  (>1: C++ faster)")
PY

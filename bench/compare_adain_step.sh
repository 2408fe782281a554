#!/usr/bin/env bash
# C++ vs Python AdaIN-GAN training step: same architecture, batch, image
# size and intra-op threads, median of N steps each, both measured in this run
# and interleaved (C++, Python, C++, Python, ...) so machine noise hits both.
# Usage: bench/compare_adain_step.sh [build-dir] [--width W --size S --batch B --threads T --steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
if [ $# -gt 0 ] && [[ $1 != --* ]]; then build=$1; shift; fi
rounds=${ROUNDS:-3}
cpp=(); py=()
for _ in $(seq "$rounds"); do
  cpp+=("$("$build/bench/bench_adain_step" "$@" | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')")
  py+=("$(/usr/bin/python3 bench/adain_step.py "$@" | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')")
done
/usr/bin/python3 - "${cpp[*]}" "${py[*]}" "$*" <<'PY'
import statistics, sys
cpp = [float(x) for x in sys.argv[1].split()]
py = [float(x) for x in sys.argv[2].split()]
c, p = statistics.median(cpp), statistics.median(py)
print(f"adain_step {sys.argv[3] or '(defaults)'}")
print(f"  cpp    median_ms={c:.1f}  rounds={cpp}")
print(f"  python median_ms={p:.1f}  rounds={py}")
print(f"  ratio python/cpp = {p / c:.3f}  (>1: C++ faster)")
PY

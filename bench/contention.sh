#!/usr/bin/env bash
# Training on cores that other work wants too: `atelier train` (a shipped
# config, default the CycleGAN one, 3 steps, 2 intra-op threads and 2 data
# workers) while one
# busy loop per core runs, with libgomp's default spin (GOMP_SPINCOUNT=300000,
# what any LibTorch program gets) against atelier's default
# (GOMP_SPINCOUNT=1000, launcher/openmp_waits.cpp), interleaved; then the
# same pair on idle cores, which is what the short spin must not slow down.
# Prints each run's wall seconds, the medians and ratio = default / atelier's
# (> 1: atelier's faster).
# Usage: bench/contention.sh [build-dir] [rounds] [config]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${2:-4}
config=${3:-configs/cyclegan.yaml}
out=$(mktemp -d)
hogs=()
stop_hogs() { [ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null || true; hogs=(); }
trap 'stop_hogs; rm -rf "$out"' EXIT

run() {  # run <spincount>: wall seconds of one short training run
  rm -rf "$out/runs"
  local start end
  start=$(date +%s.%N)
  if ! env -u OMP_WAIT_POLICY GOMP_SPINCOUNT="$1" timeout 600 "$build/atelier" train --config "$config" \
    --set train.steps=3 --set run.dir="$out/runs" --set run.name=x >"$out/log" 2>&1; then
    tail -5 "$out/log" >&2
    echo "a training run failed (above); no timing" >&2
    return 1
  fi
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.2f}')"
}

measure() {  # measure <label>
  local base=() ours=()
  local t
  for _ in $(seq "$rounds"); do
    t=$(run 300000) || exit 1
    base+=("$t")
    t=$(run 1000) || exit 1
    ours+=("$t")
  done
  python3 - "$1" "${base[*]}" "${ours[*]}" <<'PY'
import statistics, sys
label, base, ours = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
b, o = statistics.median(base), statistics.median(ours)
print(f"{label}: libgomp default (300000) s={base} median {b:.2f} | atelier (1000) s={ours} median {o:.2f} | ratio {b / o:.2f}")
PY
}

for _ in $(seq "$(nproc)"); do (while :; do :; done) & hogs+=($!); done
measure "busy cores ($(nproc) busy loops)"
stop_hogs
measure "idle cores"

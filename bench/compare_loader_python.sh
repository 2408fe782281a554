#!/usr/bin/env bash
# In-process loader (bench_loader's "folder" rate) vs the usual Python
# pipeline (bench/python_loader.py), same JPEGs, crop, batch and workers,
# interleaved rounds; prints each round and the median ratio C++ / Python.
# Both time the same number of batches (48 by default: at ~800 samples/s
# fewer would time well under a second, which this machine's noise swamps).
# Usage: bench/compare_loader_python.sh BUILD_DIR [rounds] [batches]
set -euo pipefail
build=${1:-build}
rounds=${2:-3}
batches=${3:-48}
images=/usr/share/doc/opencv-doc/examples/data
here=$(cd "$(dirname "$0")" && pwd)
ratios=()
for r in $(seq 1 "$rounds"); do
  cpp=$("$build/bench/bench_loader" --images "$images" --crop 256 --load 286 --batch 8 --workers 2 --rounds 1 \
        --batches "$batches" | sed -n 's/^median: folder \([0-9.]*\) images\/s.*/\1/p')
  py=$(/usr/bin/python3 "$here/python_loader.py" --images "$images" --crop 256 --load 286 --batch 8 --workers 2 \
       --batches "$batches" | sed -n 's/^python images_per_s=\([0-9.]*\)/\1/p')
  ratio=$(awk -v a="$cpp" -v b="$py" 'BEGIN { printf "%.2f", a / b }')
  echo "round $r: C++ in-process $cpp samples/s, Python DataLoader $py samples/s, ratio $ratio"
  ratios+=("$ratio")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ a[NR] = $1 } END { print "median ratio C++/Python " a[int((NR + 1) / 2)] }'

#!/usr/bin/env bash
# `make demo`: train the embedded default configuration (configs/demo.yaml)
# on this machine and show where the results are.
set -euo pipefail
atelier=${1:-build/atelier}
cd "$(dirname "$0")/.."

# A previous demo run is kept once, as runs/demo.previous, not overwritten.
if [ -d runs/demo ]; then
  rm -rf runs/demo.previous
  mv runs/demo runs/demo.previous
  echo "previous demo run moved to runs/demo.previous"
fi
"$atelier" train

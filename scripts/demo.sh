#!/usr/bin/env bash
# `make demo`: train the embedded default configuration (configs/demo.yaml)
# on this machine, explain the final checkpoint, and show where the results are.
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

# Two photographs and two artworks from configs/demo.yaml's lists, at the
# demo's 64 px training size (the checkpoint's data.crop_size). Integrated
# Gradients (up to 4 x 1025 gradient passes a pair) and adversarial probing
# are left to `atelier explain` itself: with them the demo would not finish
# in minutes on 2 cores.
images=/usr/share/doc/opencv-doc/examples/data
"$atelier" explain --checkpoint runs/demo/checkpoints/LATEST \
  --content "$images/baboon.jpg" "$images/fruits.jpg" \
  --style "$images/starry_night.jpg" "$images/graf1.png" \
  --methods saliency smoothgrad gradcam features adain style_layers alpha_sweep occlusion trust \
  --out runs/demo/explain
echo "open runs/demo/explain/report.html in a browser"

#!/usr/bin/env bash
# Kept for the commands recorded in bench/RESULTS.md: the AdaIN-GAN case of compare_step.sh.
exec "$(dirname "$0")/compare_step.sh" adain "$@"

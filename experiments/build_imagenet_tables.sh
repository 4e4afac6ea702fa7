#!/usr/bin/env bash
# Build the 224-px latency table of EfficientNet-Lite0 on ImageNet photos for this machine's CPU:
# latency_tables/imagenet-cpu-1t (the table experiments/imagenet_lite0.toml predicts with).
#
# experiments/build_tables.sh with the imagenet-photos space of efficientnet_lite0 at 224 px and
# channels kept whole (--keep-choices 1.0: per conv fp32 or int8, the experiment's space): profile
# every kernel, calibrate on CAL_SAMPLES random whole models, validate on SAMPLES others (held out)
# and re-time DRIFT of the calibration's. Realising a 224-px model takes 6-12 s here (int8 calibration),
# so the models, not the kernels, take the time: about 40 min on the 2-core AMD EPYC dev machine.
#
#   experiments/build_imagenet_tables.sh                          # 1 thread: SAMPLES=60, CAL_SAMPLES=40, DRIFT=10
#   SAMPLES=8 CAL_SAMPLES=8 experiments/build_imagenet_tables.sh  # quick smoke run
set -euo pipefail
cd "$(dirname "$0")"
PREFIX=imagenet-cpu THREADS=${THREADS:-1} SAMPLES=${SAMPLES:-60} CAL_SAMPLES=${CAL_SAMPLES:-40} DRIFT=${DRIFT:-10} \
  MODELS="--task imagenet-photos --task-option normalize=tf --model efficientnet_lite0 --keep-choices 1.0" exec ./build_tables.sh

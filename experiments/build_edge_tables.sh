#!/usr/bin/env bash
# Build the pretrained edge CNNs' latency tables for this machine's CPU: latency_tables/edge-cpu-1t (and -2t).
#
# experiments/build_tables.sh with the fashion search spaces (64 px, 1 channel, channels in multiples
# of 16) of mobilenetv2_imagenet and efficientnet_lite0: profile every kernel, calibrate the table on
# CAL_SAMPLES random whole models, validate it on SAMPLES other random policies (held out from the
# calibration), spread over the two models; same timing rules (p10 sums at 1 thread, medians at 2).
#
#   experiments/build_edge_tables.sh                          # 1 thread: SAMPLES=60, CAL_SAMPLES=40
#   THREADS="1 2" experiments/build_edge_tables.sh            # both tables
#   SAMPLES=8 CAL_SAMPLES=8 experiments/build_edge_tables.sh  # quick smoke run
set -euo pipefail
cd "$(dirname "$0")"
PREFIX=edge-cpu THREADS=${THREADS:-1} SAMPLES=${SAMPLES:-60} CAL_SAMPLES=${CAL_SAMPLES:-40} \
  MODELS="--task fashion --model mobilenetv2_imagenet --model efficientnet_lite0" exec ./build_tables.sh

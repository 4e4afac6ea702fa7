#!/usr/bin/env bash
# Build the pretrained edge CNNs' latency tables for this machine's CPU: latency_tables/edge-cpu-1t (and -2t).
#
# For each thread count: profile every kernel of the fashion search spaces (64 px, 1 channel,
# channels in multiples of 16) of mobilenetv2_imagenet and efficientnet_lite0; calibrate the table on
# CAL_SAMPLES random whole models; validate it on SAMPLES other random policies (held out from the
# calibration), spread over the two models. Same timing rules as build_tables.sh (p10 sums at 1 thread,
# medians at 2; whole models by p10 in interleaved rounds).
#
#   experiments/build_edge_tables.sh                          # 1 thread: SAMPLES=60, CAL_SAMPLES=40
#   THREADS="1 2" experiments/build_edge_tables.sh            # both tables
#   SAMPLES=8 CAL_SAMPLES=8 experiments/build_edge_tables.sh  # quick smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SAMPLES=${SAMPLES:-60}
CAL_SAMPLES=${CAL_SAMPLES:-40}
THREADS=${THREADS:-1}
export HWSEARCH_CACHE=${HWSEARCH_CACHE:-/tmp/hwcache}
LOCK=${LOCK:-/tmp/hwsearch-measure.lock}
MODELS=(--task fashion --model mobilenetv2_imagenet --model efficientnet_lite0)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for threads in $THREADS; do
  name=edge-cpu-${threads}t
  if [ "${FRESH:-0}" = 1 ]; then rm -rf "latency_tables/$name"; fi
  stat=p10; if [ "$threads" -gt 1 ]; then stat=median; fi
  flock "$LOCK" $PY -m hwsearch profile --device "$name" --threads "$threads" --statistic "$stat" "${MODELS[@]}"
  flock "$LOCK" $PY -m hwsearch calibrate-table "latency_tables/$name" "${MODELS[@]}" --samples "$CAL_SAMPLES"
  flock "$LOCK" $PY -m hwsearch validate-table "latency_tables/$name" "${MODELS[@]}" --samples "$SAMPLES"
done

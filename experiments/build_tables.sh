#!/usr/bin/env bash
# Build the shipped latency tables for this machine's CPU: latency_tables/cpu-1t and cpu-2t.
#
# For each thread count: profile every kernel of the digits search spaces of resnet20,
# mobilenetv2 and vgg (default widths); calibrate the table on CAL_SAMPLES random whole models
# (seeds 1000+); then validate it on SAMPLES other random policies (seeds 0+, held out from the
# calibration), spread over the three models. Tables time kernels by their p10 (steady when other
# processes share the cores); validation.json records the load average around the measurement.
#
#   experiments/build_tables.sh                       # full build: SAMPLES=210, CAL_SAMPLES=150
#   FRESH=1 experiments/build_tables.sh               # delete the tables first (needed after a schema change)
#   SAMPLES=12 CAL_SAMPLES=30 experiments/build_tables.sh   # quick smoke run
#
# Runtime on the 2-core AMD EPYC dev machine: profiling ≈ 3-5 min per table (4,911 kernels),
# calibration and validation ≈ 3-4 min each per table: ≈ 25 min in all. A killed profile resumes
# where it stopped (same command).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SAMPLES=${SAMPLES:-210}
CAL_SAMPLES=${CAL_SAMPLES:-150}
export HWSEARCH_CACHE=${HWSEARCH_CACHE:-/tmp/hwcache}
MODELS=(--task digits --model resnet20 --model mobilenetv2 --model vgg --random-init)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for threads in 1 2; do
  name=cpu-${threads}t
  if [ "${FRESH:-0}" = 1 ]; then rm -rf "latency_tables/$name"; fi
  $PY -m hwsearch.cli profile --device "$name" --threads "$threads" "${MODELS[@]}"
  $PY -m hwsearch.cli calibrate-table "latency_tables/$name" "${MODELS[@]}" --samples "$CAL_SAMPLES"
  $PY -m hwsearch.cli validate-table "latency_tables/$name" "${MODELS[@]}" --samples "$SAMPLES"
done

#!/usr/bin/env bash
# Build the shipped latency tables for this machine's CPU: latency_tables/cpu-1t and cpu-2t.
#
# For each thread count: profile every kernel of the digits search spaces of resnet20,
# mobilenetv2 and vgg (default widths); calibrate the table on CAL_SAMPLES random whole models
# (seeds 1000+); then validate it on SAMPLES other random policies (seeds 0+, held out from the
# calibration), spread over the three models. Whole models are timed by their p10 (steady when other
# processes share the cores) in 6 interleaved rounds, each keeping its fastest round; the 1-thread
# table sums kernel p10s, the 2-thread one kernel medians.
#
#   experiments/build_tables.sh                       # full build: SAMPLES=210, CAL_SAMPLES=150
#   FRESH=1 experiments/build_tables.sh               # delete the tables first (needed after a schema change)
#   SAMPLES=12 CAL_SAMPLES=30 experiments/build_tables.sh   # quick smoke run
#
# Runtime on the 2-core AMD EPYC dev machine (idle): profiling ≈ 8 min per table (4,929 kernels,
# each timed in 3 shuffled passes; the table keeps each kernel's fastest, so a VM slow spell during
# one pass does not reach it), calibration ≈ 3 min and validation ≈ 4.5 min per table: ≈ 32 min
# in all. A killed profile resumes where it stopped (same command). validate-table also re-times 30 of the calibration's models
# (validation.json "drift") and compares its own timing rounds ("repeatability").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SAMPLES=${SAMPLES:-210}
CAL_SAMPLES=${CAL_SAMPLES:-150}
DRIFT=${DRIFT:-30}  # calibration models validate-table times again (the machine's drift since calibrating)
export HWSEARCH_CACHE=${HWSEARCH_CACHE:-/tmp/hwcache}
LOCK=${LOCK:-/tmp/hwsearch-measure.lock}  # held per step, so that other measurements on the machine do not overlap
# PREFIX, THREADS and MODELS select other tables (experiments/build_edge_tables.sh sets them)
PREFIX=${PREFIX:-cpu}
THREADS=${THREADS:-1 2}
read -r -a MODELS <<< "${MODELS:---task digits --model resnet20 --model mobilenetv2 --model vgg --random-init}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for threads in $THREADS; do
  name=${PREFIX}-${threads}t
  if [ "${FRESH:-0}" = 1 ]; then rm -rf "latency_tables/$name"; fi
  # 2 threads: predictions sum kernel medians (a kernel's p10 there is its luckiest hand-off between
  # the threads, which a whole model never gets at every kernel); whole models are timed by p10 either way
  stat=p10; if [ "$threads" -gt 1 ]; then stat=median; fi
  flock "$LOCK" $PY -m hwsearch profile --device "$name" --threads "$threads" --statistic "$stat" "${MODELS[@]}"
  flock "$LOCK" $PY -m hwsearch calibrate-table "latency_tables/$name" "${MODELS[@]}" --samples "$CAL_SAMPLES"
  flock "$LOCK" $PY -m hwsearch validate-table "latency_tables/$name" "${MODELS[@]}" --samples "$SAMPLES" --drift "$DRIFT"
done

#!/usr/bin/env bash
# Build the shipped latency tables for this machine's CPU: latency_tables/cpu-1t and cpu-2t.
#
# Profiles every kernel of the digits search spaces of resnet20, mobilenetv2 and vgg (default
# widths) at 1 and 2 ORT threads, then validates each table end to end on SAMPLES random policies
# spread over the three models. Run it on a quiet machine (uptime load average well under 1):
# other work on the cores makes both the kernel and the whole-model figures noisy.
#
#   experiments/build_tables.sh              # full build: SAMPLES=210 (70 per model)
#   SAMPLES=12 experiments/build_tables.sh   # quick smoke run
#
# Expected runtime on the 2-core AMD EPYC dev machine (idle): profiling ≈ 3 min per table
# (4,911 kernels at ≈29 kernels/s, measured), validation ≈ 5-8 min per table for 210 policies
# (build + 3 interleaved timing rounds each): ≈ 20 min in all. A killed profile resumes where it
# stopped (same command).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SAMPLES=${SAMPLES:-210}
export HWSEARCH_CACHE=${HWSEARCH_CACHE:-/tmp/hwcache}
MODELS=(--model resnet20 --model mobilenetv2 --model vgg)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for threads in 1 2; do
  name=cpu-${threads}t
  $PY -m hwsearch.cli profile --device "$name" --threads "$threads" --task digits "${MODELS[@]}" --random-init
  $PY -m hwsearch.cli validate-table "latency_tables/$name" --task digits "${MODELS[@]}" --samples "$SAMPLES"
done

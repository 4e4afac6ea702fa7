#!/usr/bin/env bash
# Profile, calibrate and validate the MiniLM block tables (task minilm, all-minilm-l6-v2, 128 tokens):
# latency_tables/minilm-cpu-1t and minilm-cpu-2t, one table after the other.
#
# Per table (thread count t = 1, 2):
#   1. hwsearch profile: every transformer block of the space, PASSES=1 shuffled pass (each kernel keeps
#      its fastest pass), under /tmp/hwsearch-measure.lock for the whole step;
#   2. hwsearch calibrate-table: CALIBRATE=60 random whole models (seeds 1000+) fit the table's
#      calibration.json (per-class scale, intercept, and the cost of each precision change between blocks);
#   3. hwsearch validate-table: SAMPLES=200 other random models (seeds 0+, held out from the calibration)
#      against the calibrated table, written to validation.json (--drift 0: no re-timing of the
#      calibration's models).
# Steps 2 and 3 realise models BATCH=16 at a time (the encoder's ONNX files are 60-90 MB) and time each
# batch in ROUNDS=3 interleaved passes with the table's settings (>= 40 runs and 0.2 s per pass),
# holding the lock (--lock) only while timing; COMBINE=median: a model's median pass (even vs odd
# passes give validation.json's "repeatability").
# The shipped MiniLM tables were built with these defaults: blocks profiled in PASSES=1 pass, models
# by the median of their passes. PASSES=3 COMBINE=min is what the CNN tables use; a run with it on
# 2026-11-22 (02:04-02:30 UTC) scored 81% / 99.5% (1 thread) and 82% / 99.5% (2 threads) within
# ±5% / ±10%, with its batches' mean error moving between -4.9% and +2.5% as the machine drifted.
# About 30 min on the 2-core dev machine (profiling: about 30 s per table and pass).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
LOCK=${LOCK:-/tmp/hwsearch-measure.lock}
MODEL=(--task minilm --model all-minilm-l6-v2)
MEASURE=(--rounds "${ROUNDS:-3}" --batch "${BATCH:-16}" --min-runs 40 --min-time 0.2 --combine "${COMBINE:-median}" --lock "$LOCK" --quiet)
for t in 1 2; do
  table="latency_tables/minilm-cpu-${t}t"
  flock "$LOCK" "$BIN/hwsearch" profile "${MODEL[@]}" --device "minilm-cpu-${t}t" --threads "$t" \
    --min-runs 40 --min-time 0.3 --passes "${PASSES:-1}" --quiet
  "$BIN/hwsearch" calibrate-table "$table" "${MODEL[@]}" --samples "${CALIBRATE:-60}" "${MEASURE[@]}"
  "$BIN/hwsearch" validate-table "$table" "${MODEL[@]}" --samples "${SAMPLES:-200}" --drift 0 "${MEASURE[@]}"
done

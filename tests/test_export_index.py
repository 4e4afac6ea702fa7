"""export/index.json from manifests alone: the recommendation rule, rankings, skipped files, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwsearch.errors import HwsearchError
from hwsearch.export.index import TOLERANCE, build_index, format_index, recommend, write_index
from hwsearch.export.manifest import Manifest


def manifest(trial: int, val: float, measured: float | None, predicted: float, ok: bool = True, budget: float | None = None) -> Manifest:
    """A schema-2 manifest with the figures the index reads (the other groups as export fills them, abridged)."""
    latency = {"cpu-1t": {"predicted_ms": predicted, "measured_ms": measured, "speedup_vs_dense": None if measured is None else round(1.0 / measured, 4),
                          "speedup_basis": None if measured is None else "measured", "budget_ms": budget}}
    return Manifest(run="r", trial=trial, ok=ok, flags=[] if ok else ["parity failed: max_abs_diff 0.1 (needs <= 0.0001)"], warnings=[],
                    model={"file": "model.onnx", "params": 100 * (trial + 1), "size_bytes": 400 * (trial + 1), "precision_counts": {"fp32": 2}},
                    scores={"metric": "accuracy", "test_accuracy": val - 0.005, "validation_accuracy": val}, latency=latency,
                    runtime={}, policy={}, checks={"parity": {"ok": ok}}, provenance={})


def write(run: Path, manifests: list[Manifest]) -> Path:
    for m in manifests:
        (run / "export" / str(m.trial)).mkdir(parents=True, exist_ok=True)
        m.save(run / "export" / str(m.trial) / "manifest.json")
    return run


def entries(tmp_path: Path, manifests: list[Manifest]) -> list[dict]:
    return build_index(write(tmp_path, manifests))["winners"]


def test_without_budget_the_fastest_within_tolerance_of_the_best(tmp_path):
    es = entries(tmp_path, [manifest(0, 0.95, 1.0, 1.1), manifest(1, 0.945, 0.6, 0.7), manifest(2, 0.93, 0.3, 0.4)])
    rec = recommend(es, "cpu-1t", None, TOLERANCE, "validation_accuracy")
    assert rec["trial"] == 1 and rec["latency_basis"] == "measured_ms" and "within 0.01 of the best (0.9500)" in rec["reason"]
    assert recommend(es, "cpu-1t", None, 0.0, "validation_accuracy")["trial"] == 0  # no tolerance: the most accurate
    assert recommend(es, "cpu-1t", None, 0.05, "validation_accuracy")["trial"] == 2


def test_with_budget_the_best_within_it_else_the_fastest(tmp_path):
    es = entries(tmp_path, [manifest(0, 0.95, 1.0, 1.1), manifest(1, 0.945, 0.6, 0.7), manifest(2, 0.93, 0.3, 0.4)])
    assert recommend(es, "cpu-1t", 0.7, TOLERANCE, "validation_accuracy")["trial"] == 1
    rec = recommend(es, "cpu-1t", 0.1, TOLERANCE, "validation_accuracy")
    assert rec["trial"] == 2 and "no exported winner meets budget_ms 0.1" in rec["reason"]


def test_flagged_winners_are_ranked_but_never_recommended(tmp_path):
    es = entries(tmp_path, [manifest(0, 0.99, 0.1, 0.1, ok=False), manifest(1, 0.90, 0.5, 0.5)])
    assert recommend(es, "cpu-1t", None, TOLERANCE, "validation_accuracy")["trial"] == 1
    assert recommend([e for e in es if not e["ok"]], "cpu-1t", None, TOLERANCE, "validation_accuracy") is None


def test_predicted_latency_when_a_winner_was_not_re_measured(tmp_path):
    index = build_index(write(tmp_path, [manifest(0, 0.95, None, 0.2), manifest(1, 0.95, 0.1, 0.5)]))
    assert index["recommended"]["cpu-1t"]["trial"] == 0 and index["recommended"]["cpu-1t"]["latency_basis"] == "predicted_ms"
    assert index["ranking"]["cpu-1t"] == {"latency_basis": "predicted_ms", "by_latency": [0, 1], "by_score": [0, 1]}


def test_index_file_paths_budget_and_table(tmp_path):
    run = write(tmp_path, [manifest(3, 0.95, 0.4, 0.5, budget=0.45), manifest(7, 0.97, 0.8, 0.9, budget=0.45)])
    path = write_index(run, tolerance=0.02)
    index = json.loads(path.read_text())
    assert path == run / "export" / "index.json" and index["rule"]["tolerance"] == 0.02 and index["devices"] == {"cpu-1t": {"budget_ms": 0.45}}
    assert [(e["trial"], e["model"], e["manifest"]) for e in index["winners"]] == [(3, "3/model.onnx", "3/manifest.json"), (7, "7/model.onnx", "7/manifest.json")]
    assert index["recommended"]["cpu-1t"]["trial"] == 3 and index["dense"] is None
    lines = format_index(index)
    assert "device cpu-1t (budget 0.45 ms): recommended trial 3 -> 3/model.onnx" in lines[1]
    rows = [line for line in lines if line.rstrip().endswith("/model.onnx") and not line.startswith("device")]
    assert [r.split()[0] for r in rows] == ["*", "7"]  # fastest first, the pick starred


def test_old_or_unreadable_manifests_are_skipped_with_the_reason(tmp_path):
    run = write(tmp_path, [manifest(1, 0.9, 0.5, 0.5)])
    (run / "export" / "0").mkdir()
    (run / "export" / "0" / "manifest.json").write_text(json.dumps({"trial": 0, "accuracy": 0.9, "schema_version": 1}))
    index = build_index(run)
    assert [e["trial"] for e in index["winners"]] == [1]
    assert index["skipped"][0]["manifest"] == "0/manifest.json" and "schema version 1" in index["skipped"][0]["reason"]
    with pytest.raises(HwsearchError, match="schema version 1, this hwsearch reads 2"):
        Manifest.load(run / "export" / "0" / "manifest.json")


def test_nothing_exported_is_a_user_error(tmp_path):
    with pytest.raises(HwsearchError, match="holds no readable manifest.json; run `hwsearch export"):
        build_index(tmp_path)


def test_cli_default_tolerance_is_the_index_default():
    from hwsearch.cli import export as cli_export

    assert cli_export.TOLERANCE == TOLERANCE


def test_table_paths_are_builtin_or_relative_to_the_run(tmp_path):
    from hwsearch.config.builtin import builtin_table
    from hwsearch.export.describe import table_ref

    assert table_ref(builtin_table("cpu-1t"), tmp_path / "runs" / "x") == "builtin:cpu-1t"
    assert table_ref(tmp_path / "tables" / "edge", tmp_path / "runs" / "x") == "../../tables/edge"


def test_tasks_describe_metric_labels_and_preprocessing():
    import numpy as np
    from sklearn.datasets import load_digits

    from hwsearch.tasks import get_task
    from hwsearch.tasks.base import Task
    from hwsearch.tasks.cifar10 import CLASSES
    from hwsearch.tasks.minilm import MiniLMTask

    digits = get_task("digits")
    pre = digits.preprocessing()
    raw, test = load_digits(), pre["split"]["test_indices"]
    size = pre["resize"]["size"][0]
    src = np.clip((np.arange(size) + 0.5) * 8 / size - 0.5, 0, 7)
    lo, w = src.astype(int), src % 1
    r = np.zeros((size, 8))
    r[range(size), lo] = 1 - w
    r[range(size), np.minimum(lo + 1, 7)] += w
    x = ((r @ (raw.images[test] * pre["scale"]) @ r.T - pre["mean"][0]) / pre["std"][0]).astype(np.float32)[:, None]
    assert np.array_equal(x, digits.split("test").x) and np.array_equal(raw.target[test], digits.split("test").y)  # the recipe is exact
    assert digits.class_names() == [str(d) for d in range(10)] and digits.metric_name() == "accuracy"
    assert MiniLMTask(objective="spearman").metric_name() == "fidelity_spearman" and MiniLMTask().class_names() is None
    assert MiniLMTask(seq_len=64).preprocessing()["tokenizer"]["truncation"] == 64
    assert len(CLASSES) == 10 and Task.class_names(digits) is None and "records no preprocessing" in Task.preprocessing(digits)["description"]

"""Export: winners rebuilt from their policies, verified (checker, parity), measured, with manifests."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from hwsearch.cli import main
from hwsearch.errors import HwsearchError
from hwsearch.export import Manifest, build_winner, export_run, verify_winner
from hwsearch.export.winners import Winner, load_run
from tests.conftest import TINY_TRAIN, TINY_VGG
from tests.synthetic_run import record, write_run

BUDGETS = {"cpu-1t": 0.5}
PRUNED_FP32 = {"keep": {"features.0": 0.5, "features.4": 0.5}}
PARTLY_INT8 = {"precision": {"features.4": "int8", "features.8": "int8"}}
UNPRUNED = {"default_keep": 1.0}
REQUIRED = {"trial", "policy", "accuracy", "predicted_latency_ms", "measured_latency_ms", "params", "macs", "size_bytes", "parity_ok",
            "tables", "versions", "session_options", "flags", "ok", "checker_ok"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_vgg) -> Path:
    recs = [record(0, 0.70, {"cpu-1t": 0.05}, PRUNED_FP32, BUDGETS), record(1, 0.74, {"cpu-1t": 0.08}, PARTLY_INT8, BUDGETS),
            record(2, 0.60, {"cpu-1t": 0.09}, UNPRUNED, BUDGETS)]  # trial 2 is dominated: only --trial exports it
    root = tmp_path_factory.mktemp("exportrun")
    return write_run(root, "exp", BUDGETS, recs, model_options=TINY_VGG, train=TINY_TRAIN, compress={"finetune_steps": 5, "bn_recalib_batches": 2})


@pytest.fixture(scope="module")
def manifests(run_dir) -> dict[int, Manifest]:
    return {m.trial: m for m in export_run(run_dir, trials=[2], pareto=True)}


def test_front_and_listed_trials_are_exported_with_files(run_dir, manifests):
    assert sorted(manifests) == [0, 1, 2]
    for n, m in manifests.items():
        folder = run_dir / "export" / str(n)
        assert (folder / "model.onnx").is_file() and (folder / "manifest.json").is_file()
        assert not list(folder.glob("*.fp32.onnx"))
        assert m.size_bytes == (folder / "model.onnx").stat().st_size
        assert m.onnx_sha256 == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()


def test_winners_pass_checker_and_parity(manifests, digits):
    fp32, int8 = manifests[0], manifests[1]
    FP32_MAX_ABS_DIFF, MIN_TOP1_AGREEMENT = digits.fp32_max_abs_diff, digits.min_top1_agreement
    assert (FP32_MAX_ABS_DIFF, MIN_TOP1_AGREEMENT) == (1e-4, 0.99)  # the documented parity thresholds
    assert (fp32.parity["threshold"], int8.parity["threshold"]) == (FP32_MAX_ABS_DIFF, MIN_TOP1_AGREEMENT)
    assert all(m.ok and m.checker_ok and m.parity_ok and not m.flags for m in manifests.values())
    assert fp32.parity["metric"] == "max_abs_diff" and fp32.parity["value"] <= FP32_MAX_ABS_DIFF
    assert int8.parity["metric"] == "top1_agreement" and int8.parity["value"] >= MIN_TOP1_AGREEMENT
    assert int8.precision_counts["int8"] == 2 and int8.quantized_kernels >= 2
    assert fp32.parity["samples"] == 359 and fp32.parity["split"] == "val"


def test_pruning_is_real_in_the_export(manifests):
    pruned, full = manifests[0], manifests[2]
    assert pruned.params < full.params and pruned.macs < full.macs and pruned.size_bytes < full.size_bytes


def test_manifest_schema_and_provenance(run_dir, manifests):
    m = manifests[0]
    data = json.loads((run_dir / "export" / "0" / "manifest.json").read_text())
    assert REQUIRED <= set(data)
    assert Manifest.load(run_dir / "export" / "0" / "manifest.json") == m
    assert data["policy"]["keep"] == PRUNED_FP32["keep"]
    table = load_run(run_dir).devices[0].table_dir
    assert data["tables"]["cpu-1t"]["sha256"] == hashlib.sha256((table / "table.csv").read_bytes()).hexdigest()
    assert data["tables"]["cpu-1t"]["name"] == "cpu-1t"
    assert data["session_options"]["cpu-1t"]["threads"] == 1 and data["session_options"]["cpu-1t"]["runs"] == 30
    assert data["predicted_latency_ms"] == {"cpu-1t": 0.05}  # pareto.json's figure (no table predictor in this synthetic run)
    assert 0.0 < data["measured_latency_ms"]["cpu-1t"] <= data["measured_latency_p90_ms"]["cpu-1t"]
    assert {"torch", "onnx", "onnxruntime", "optuna"} <= set(data["versions"])
    assert 0.0 <= data["accuracy"] <= 1.0 and data["search_accuracy"] == 0.70
    assert any("search recorded 0.7000" in w for w in data["warnings"])  # the synthetic record's 0.70 is not what the file scores
    assert any("predicted latency taken from the search's record" in w for w in data["warnings"])


def test_fresh_process_reproduces_manifest_accuracy(run_dir, manifests):
    """Load model.onnx in a new interpreter with plain onnxruntime and the manifest's session options."""
    script = """
import json, sys
import numpy as np, onnxruntime as ort
from hwsearch.tasks import get_task
for folder in sys.argv[1:]:
    m = json.load(open(folder + "/manifest.json"))
    opts = m["accuracy_session_options"]
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = opts["threads"], opts["inter_op_num_threads"]
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, opts["graph_optimization"])
    sess = ort.InferenceSession(folder + "/" + m["onnx_path"], so, providers=[opts["provider"]])
    split = get_task(m["task"]).split(m["accuracy_split"])
    logits = np.concatenate([sess.run(None, {"input": split.x[i:i + 64]})[0] for i in range(0, len(split.x), 64)])
    print(json.dumps(float((logits.argmax(1) == split.y).mean())))
"""
    folders = [str(run_dir / "export" / str(n)) for n in (0, 1)]
    out = subprocess.run([sys.executable, "-c", script, *folders], capture_output=True, text=True, timeout=180, check=True)
    assert [json.loads(line) for line in out.stdout.split()] == [manifests[0].accuracy, manifests[1].accuracy]


@pytest.fixture(scope="module")
def rebuilt(run_dir, tmp_path_factory):
    """One rebuilt winner (torch model + ONNX file) that the fault-injection tests copy."""
    ctx = load_run(run_dir)
    winner = Winner(0, PRUNED_FP32, 0.7, {"cpu-1t": 0.05})
    model, result = build_winner(ctx, winner, tmp_path_factory.mktemp("rebuilt"))
    return ctx, winner, model, result


def _rebuilt(rebuilt, tmp_path: Path):
    ctx, winner, model, result = rebuilt
    copy = tmp_path / "model.onnx"
    shutil.copyfile(result.onnx_path, copy)
    return ctx, winner, model, replace(result, onnx_path=str(copy))


def test_rebuilt_file_passes_before_faults_are_injected(rebuilt, tmp_path):
    m = verify_winner(*_rebuilt(rebuilt, tmp_path), 0.0)
    assert m.ok and m.parity_ok and m.checker_ok and m.measured_latency_ms["cpu-1t"] > 0


def test_corrupted_weights_are_flagged(rebuilt, tmp_path, digits):
    ctx, winner, model, result = _rebuilt(rebuilt, tmp_path)
    proto = onnx.load(result.onnx_path)
    conv = next(n for n in proto.graph.node if n.name == "features.4")
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), init.name))  # a 1% weight drift
    onnx.save(proto, result.onnx_path)
    m = verify_winner(ctx, winner, model, result, 0.0)
    assert m.checker_ok and not m.parity_ok and not m.ok
    assert m.parity["value"] > digits.fp32_max_abs_diff and any("parity failed" in f for f in m.flags)
    m.save(tmp_path / "manifest.json")
    assert json.loads((tmp_path / "manifest.json").read_text())["parity_ok"] is False


def test_mismatched_torch_model_is_flagged(rebuilt, tmp_path):
    ctx, winner, _, result = _rebuilt(rebuilt, tmp_path)
    m = verify_winner(ctx, winner, ctx.ctx.baseline.model, result, 0.0)  # the unpruned baseline is not what was exported
    assert not m.parity_ok and not m.ok and m.accuracy is not None


def test_unreadable_file_is_flagged_not_raised(rebuilt, tmp_path):
    ctx, winner, model, result = _rebuilt(rebuilt, tmp_path)
    Path(result.onnx_path).write_bytes(b"not an onnx file")
    m = verify_winner(ctx, winner, model, result, 0.0)
    assert not m.checker_ok and not m.parity_ok and m.parity["error"] and m.accuracy is None
    assert m.measured_latency_ms == {"cpu-1t": None} and len(m.flags) == 2


def test_cli_reports_flagged_winners_and_exits_1(run_dir, capsys, monkeypatch):
    import hwsearch.export.verify as export

    real = export.build_winner

    def drifted(ctx, winner, out_dir):  # the real build, then a weight drift: the command must flag it
        model, result = real(ctx, winner, out_dir)
        proto = onnx.load(result.onnx_path)
        proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(proto.graph.initializer[0]) * np.float32(1.5), proto.graph.initializer[0].name))
        onnx.save(proto, result.onnx_path)
        return model, result

    monkeypatch.setattr(export, "build_winner", drifted)
    assert main(["export", str(run_dir), "--trial", "0"]) == 1
    out = capsys.readouterr()
    assert "trial 0: FAILED" in out.out and "parity failed" in out.out and "flagged, not shipped" in out.err
    assert json.loads((run_dir / "export" / "0" / "manifest.json").read_text())["parity_ok"] is False


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nope", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "has no config.json"),
])
def test_cli_errors_name_the_run_dir(tmp_path, capsys, make, message):
    assert main(["export", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path) in err


def test_missing_pareto_and_unknown_trial_are_user_errors(run_dir, tmp_path):
    (run_dir / "pareto.json").rename(tmp_path / "pareto.json")
    try:
        with pytest.raises(HwsearchError, match="pareto.json.*--trial N"):
            export_run(run_dir)
        with pytest.raises(HwsearchError, match="Trial 99 is not in run 'exp'"):
            export_run(run_dir, trials=[99], pareto=False)
    finally:
        (tmp_path / "pareto.json").rename(run_dir / "pareto.json")

"""Export: winners rebuilt from their policies, verified (checker, parity), measured, with manifests."""

from __future__ import annotations

import hashlib
import json
import re
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
from hwsearch.export.manifest import GROUPS, SCHEMA_VERSION
from hwsearch.export.winners import Winner, load_run
from tests.conftest import TINY_TRAIN, TINY_VGG
from tests.synthetic_run import record, write_run

README = Path(__file__).resolve().parents[1] / "README.md"
BUDGETS = {"cpu-1t": 0.5}
PRUNED_FP32 = {"keep": {"features.0": 0.5, "features.4": 0.5}}
PARTLY_INT8 = {"precision": {"features.4": "int8", "features.8": "int8"}}
UNPRUNED = {"default_keep": 1.0}
TOP = ["schema_version", "run", "trial", "ok", "flags", "warnings", *GROUPS, "recovery"]  # manifest.json's keys, in file order


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
        assert m.model["file"] == "model.onnx" and m.model["size_bytes"] == (folder / "model.onnx").stat().st_size
        assert m.model["sha256"] == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert (run_dir / "export" / "index.json").is_file() and (run_dir / "export" / "dense" / "model.onnx").is_file()


def test_winners_pass_checker_and_parity(manifests, digits):
    fp32, int8 = manifests[0], manifests[1]
    FP32_MAX_ABS_DIFF, MIN_TOP1_AGREEMENT = digits.fp32_max_abs_diff, digits.min_top1_agreement
    assert (FP32_MAX_ABS_DIFF, MIN_TOP1_AGREEMENT) == (1e-4, 0.99)  # the documented parity thresholds
    assert (fp32.parity["threshold"], int8.parity["threshold"]) == (FP32_MAX_ABS_DIFF, MIN_TOP1_AGREEMENT)
    assert all(m.ok and m.checks["onnx_checker"] == {"ok": True, "error": None} and m.parity["ok"] and not m.flags for m in manifests.values())
    assert fp32.parity["metric"] == "max_abs_diff" and fp32.parity["value"] <= FP32_MAX_ABS_DIFF
    assert int8.parity["metric"] == "top1_agreement" and int8.parity["value"] >= MIN_TOP1_AGREEMENT
    assert int8.model["precision_counts"]["int8"] == 2 and int8.model["quantized_kernels"] >= 2
    assert fp32.parity["samples"] == 359 and fp32.parity["split"] == "val"


def test_pruning_is_real_in_the_export(manifests):
    pruned, full = manifests[0].model, manifests[2].model
    assert pruned["params"] < full["params"] and pruned["macs"] < full["macs"] and pruned["size_bytes"] < full["size_bytes"]


def test_manifest_groups_and_provenance(run_dir, manifests):
    m = manifests[0]
    path = run_dir / "export" / "0" / "manifest.json"
    data = json.loads(path.read_text())
    assert list(data) == TOP and data["schema_version"] == SCHEMA_VERSION
    assert Manifest.load(path) == m
    assert data["policy"]["keep"] == PRUNED_FP32["keep"]
    prov = data["provenance"]
    table = load_run(run_dir).devices[0].table_dir
    assert prov["tables"]["cpu-1t"]["sha256"] == hashlib.sha256((table / "table.csv").read_bytes()).hexdigest()
    assert prov["tables"]["cpu-1t"]["path"] == "../../latency_tables/cpu-1t" == data["latency"]["cpu-1t"]["table"]  # relative to the run directory
    assert (run_dir / prov["tables"]["cpu-1t"]["path"]).resolve() == table.resolve()
    assert (path.parent / prov["config"]).resolve() == (run_dir / "config.json").resolve() and (path.parent / prov["run_dir"]).resolve() == run_dir.resolve()
    assert not any(str(run_dir.parent) in json.dumps(v) for k, v in prov.items() if k != "measurement_conditions")  # no absolute path
    assert prov["run"] == "exp" and prov["trial"] == 0 and prov["hwsearch_version"] == prov["versions"]["hwsearch"] and prov["base_model"] == "vgg"
    assert {"torch", "onnx", "onnxruntime", "optuna"} <= set(prov["versions"])
    assert any("search recorded 0.7000" in w for w in data["warnings"])  # the synthetic record's 0.70 is not what the file scores
    assert any("predicted latency taken from the search's record" in w for w in data["warnings"])


def test_manifest_model_contract(run_dir, manifests, digits):
    model = json.loads((run_dir / "export" / "0" / "manifest.json").read_text())["model"]
    assert model["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 32, 32]}]
    assert [(o["dtype"], o["shape"]) for o in model["outputs"]] == [("float32", ["batch", 10])]
    assert model["labels"] == [str(d) for d in range(10)] and model["task"] == "digits"
    pre = model["preprocessing"]
    assert pre["scale"] == 1 / 16 and pre["mean"] == [0.5] and pre["std"] == [0.5] and pre["resize"]["size"] == [32, 32]
    assert pre["split"]["seed"] == 20240601 and len(pre["split"]["test_indices"]) == len(digits.split("test")) == 360
    assert isinstance(model["params"], int) and isinstance(model["size_bytes"], int) and isinstance(model["sha256"], str)


def test_manifest_scores_latency_runtime(manifests, digits):
    m = manifests[0]
    s = m.scores
    assert s["metric"] == "accuracy" and set(s) >= {"test_accuracy", "validation_accuracy", "search_validation_accuracy", "dense_test_accuracy", "dense_validation_accuracy"}
    assert all(0.0 <= s[k] <= 1.0 for k in ("test_accuracy", "validation_accuracy", "dense_test_accuracy", "dense_validation_accuracy"))
    assert s["search_validation_accuracy"] == 0.70 and m.validation_score == s["validation_accuracy"] and m.test_score == s["test_accuracy"]
    lat = m.latency["cpu-1t"]
    assert lat["predicted_ms"] == 0.05 and lat["statistic"] == "median" and lat["runs"] == 30 and lat["warmup"] == 5 and lat["budget_ms"] == 0.5
    assert 0.0 < lat["measured_ms"] <= lat["measured_p90_ms"] and lat["input_shape"] == [1, 1, 32, 32]
    assert lat["machine"]["threads"] == 1 and lat["machine"]["cpu_model"] and lat["machine"]["host"]
    assert lat["dense_measured_ms"] > 0 and lat["speedup_basis"] == "measured"
    assert lat["speedup_vs_dense"] == pytest.approx(lat["dense_measured_ms"] / lat["measured_ms"], rel=1e-3)
    ort_names = {"intra_op_num_threads": 1, "inter_op_num_threads": 1, "graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL",
                 "providers": ["CPUExecutionProvider"], "disabled_optimizers": ["WeightBiasQuantization"]}
    assert m.runtime["scoring"] == ort_names and m.runtime["devices"] == {"cpu-1t": ort_names}


def test_dense_reference_is_the_unpruned_fp32_model(run_dir, manifests):
    dense = json.loads((run_dir / "export" / "dense" / "reference.json").read_text())
    full = manifests[2]  # default_keep 1.0, fp32: the dense model rebuilt through the same pipeline
    assert dense["params"] == full.model["params"] and dense["file"] == "dense/model.onnx"
    assert dense["scores"]["test"] == full.scores["dense_test_accuracy"] == full.test_score
    assert dense["measured_ms"]["cpu-1t"] == full.latency["cpu-1t"]["dense_measured_ms"]


def test_fresh_process_reproduces_manifest_scores(run_dir, manifests):
    """Load model.onnx in a new interpreter with plain onnxruntime and the manifest's runtime.scoring options."""
    script = """
import json, sys
import numpy as np, onnxruntime as ort
from hwsearch.tasks import get_task
for folder in sys.argv[1:]:
    m = json.load(open(folder + "/manifest.json"))
    rt = m["runtime"]["scoring"]
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = rt["intra_op_num_threads"], rt["inter_op_num_threads"]
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, rt["graph_optimization_level"])
    so.execution_mode = getattr(ort.ExecutionMode, rt["execution_mode"])
    sess = ort.InferenceSession(folder + "/" + m["model"]["file"], so, providers=rt["providers"], disabled_optimizers=rt["disabled_optimizers"])
    split = get_task(m["model"]["task"]).split("val")
    logits = np.concatenate([sess.run(None, {m["model"]["inputs"][0]["name"]: split.x[i:i + 64]})[0] for i in range(0, len(split.x), 64)])
    print(json.dumps(float((logits.argmax(1) == split.y).mean())))
"""
    folders = [str(run_dir / "export" / str(n)) for n in (0, 1)]
    out = subprocess.run([sys.executable, "-c", script, *folders], capture_output=True, text=True, timeout=180, check=True)
    assert [json.loads(line) for line in out.stdout.split()] == [manifests[0].validation_score, manifests[1].validation_score]


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
    assert m.ok and m.parity["ok"] and m.checks["onnx_checker"]["ok"] and m.measured_latency_ms["cpu-1t"] > 0
    assert m.latency["cpu-1t"]["speedup_vs_dense"] is None and m.scores["dense_test_accuracy"] is None  # no dense reference given


def test_corrupted_weights_are_flagged(rebuilt, tmp_path, digits):
    ctx, winner, model, result = _rebuilt(rebuilt, tmp_path)
    proto = onnx.load(result.onnx_path)
    conv = next(n for n in proto.graph.node if n.name == "features.4")
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), init.name))  # a 1% weight drift
    onnx.save(proto, result.onnx_path)
    m = verify_winner(ctx, winner, model, result, 0.0)
    assert m.checks["onnx_checker"]["ok"] and not m.parity["ok"] and not m.ok
    assert m.parity["value"] > digits.fp32_max_abs_diff and any("parity failed" in f for f in m.flags)
    m.save(tmp_path / "manifest.json")
    assert json.loads((tmp_path / "manifest.json").read_text())["checks"]["parity"]["ok"] is False


def test_mismatched_torch_model_is_flagged(rebuilt, tmp_path):
    ctx, winner, _, result = _rebuilt(rebuilt, tmp_path)
    m = verify_winner(ctx, winner, ctx.ctx.baseline.model, result, 0.0)  # the unpruned baseline is not what was exported
    assert not m.parity["ok"] and not m.ok and m.validation_score is not None and m.test_score is not None


def test_unreadable_file_is_flagged_not_raised(rebuilt, tmp_path):
    ctx, winner, model, result = _rebuilt(rebuilt, tmp_path)
    Path(result.onnx_path).write_bytes(b"not an onnx file")
    m = verify_winner(ctx, winner, model, result, 0.0)
    assert not m.checks["onnx_checker"]["ok"] and not m.parity["ok"] and m.parity["error"] and m.validation_score is None and m.test_score is None
    assert m.measured_latency_ms == {"cpu-1t": None} and len(m.flags) == 2 and m.model["inputs"] == [] and "error" in m.model


def readme_snippet(name: str) -> str:
    """The python code between ``<!-- snippet:NAME -->`` and ``<!-- /snippet:NAME -->`` in README.md."""
    text = README.read_text()
    block = text.split(f"<!-- snippet:{name} -->", 1)[1].split(f"<!-- /snippet:{name} -->", 1)[0]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def test_index_ranks_every_winner_and_recommends_per_device(run_dir, manifests):
    index = json.loads((run_dir / "export" / "index.json").read_text())
    assert index["schema_version"] == 1 and index["run"] == "exp" and index["metric"] == "accuracy" and index["skipped"] == []
    entries = {e["trial"]: e for e in index["winners"]}
    assert sorted(entries) == [0, 1, 2]
    for n, e in entries.items():
        m = manifests[n]
        assert (e["model"], e["manifest"]) == (f"{n}/model.onnx", f"{n}/manifest.json") and (run_dir / "export" / e["model"]).is_file()
        assert Manifest.load(run_dir / "export" / e["manifest"]) == m
        assert (e["test_accuracy"], e["validation_accuracy"], e["params"], e["size_bytes"]) == (m.test_score, m.validation_score, m.model["params"], m.model["size_bytes"])
        assert e["latency"]["cpu-1t"]["measured_ms"] == m.measured_latency_ms["cpu-1t"] and e["latency"]["cpu-1t"]["speedup_vs_dense"] > 0
    measured = {n: m.measured_latency_ms["cpu-1t"] for n, m in manifests.items()}
    assert index["ranking"]["cpu-1t"]["by_latency"] == sorted(measured, key=measured.get) and index["ranking"]["cpu-1t"]["latency_basis"] == "measured_ms"
    within = [n for n in measured if measured[n] <= BUDGETS["cpu-1t"]]
    expected = max(within, key=lambda n: (manifests[n].validation_score, -measured[n]))
    rec = index["recommended"]["cpu-1t"]
    assert rec["trial"] == expected and rec["model"] == f"{expected}/model.onnx" and "budget_ms 0.5" in rec["reason"]
    assert index["dense"]["model"] == "dense/model.onnx" and index["dense"]["test_accuracy"] == manifests[2].scores["dense_test_accuracy"]


def test_readme_snippet_reproduces_the_recommended_models_test_score(run_dir, manifests, tmp_path):
    """The README's loading snippet, run verbatim in a fresh interpreter (plain onnxruntime, numpy, scikit-learn)."""
    snippet = readme_snippet("load")
    assert "hwsearch" not in snippet.replace("`hwsearch export", "")  # plain ONNX Runtime: nothing of ours is imported
    export = re.search(r'export = "([^"]+)"', snippet).group(1)
    link = tmp_path / Path(export).parent  # the snippet's runs/<name> is this test's run
    link.parent.mkdir(parents=True)
    link.symlink_to(run_dir, target_is_directory=True)
    out = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=180, check=True)
    got, claimed = map(float, out.stdout.split())
    rec = json.loads((run_dir / "export" / "index.json").read_text())["recommended"]["cpu-1t"]
    assert claimed == manifests[rec["trial"]].test_score and got == claimed


def test_export_notes_each_winner_in_the_study_for_optuna_dashboard(run_dir, manifests):
    pytest.importorskip("optuna_dashboard")
    from optuna_dashboard import wsgi

    from tests.test_dashboard import _wsgi_get

    app = wsgi(f"sqlite:///{(run_dir / 'study.db').resolve()}")
    study_id = next(s["study_id"] for s in _wsgi_get(app, "/api/studies")["study_summaries"] if s["study_name"] == "exp")
    notes = {t["number"]: t["note"]["body"] for t in _wsgi_get(app, f"/api/studies/{study_id}")["trials"]}
    rec = json.loads((run_dir / "export" / "index.json").read_text())["recommended"]["cpu-1t"]["trial"]
    for n, m in manifests.items():
        assert f"export/{n}/model.onnx" in notes[n] and f"test_accuracy {m.test_score:.4f}" in notes[n]
        assert ("recommended for this device" in notes[n]) == (n == rec)


def test_cli_json_prints_the_index(run_dir, capsys):
    assert main(["export", str(run_dir), "--trial", "2", "--json"]) == 0
    out = capsys.readouterr().out
    printed = json.loads(out)
    assert printed == json.loads((run_dir / "export" / "index.json").read_text())
    assert [e["trial"] for e in printed["winners"]] == [0, 1, 2] and printed["recommended"]["cpu-1t"]["trial"] in (0, 1, 2)


def test_cli_rejects_a_negative_tolerance_before_any_work(run_dir, capsys, monkeypatch):
    from hwsearch.export import ship

    monkeypatch.setattr(ship, "load_run", lambda *a, **k: pytest.fail("the run was loaded before the arguments were checked"))
    assert main(["export", str(run_dir), "--tolerance", "-0.1"]) == 2
    assert "--tolerance -0.1 is not allowed" in capsys.readouterr().err


def test_cli_reports_flagged_winners_and_exits_1(run_dir, capsys, monkeypatch):
    import hwsearch.export.ship as export

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
    assert "device cpu-1t (budget 0.5 ms): recommended trial" in out.out and "trial  test_accuracy  validation_accuracy" in out.out
    assert json.loads((run_dir / "export" / "0" / "manifest.json").read_text())["checks"]["parity"]["ok"] is False
    index = json.loads((run_dir / "export" / "index.json").read_text())
    assert next(e for e in index["winners"] if e["trial"] == 0)["ok"] is False and index["recommended"]["cpu-1t"]["trial"] != 0  # a flagged winner is never recommended


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

"""Tables adapted to the machine they run on: the few-shot fit, the check's report and verdict,
fingerprint matching, corrupt files, the automatic check's modes, and export's warning threshold."""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import pytest

from hwsearch import context
from hwsearch.config import DeviceSpec
from hwsearch.errors import HwsearchError
from hwsearch.latency import check
from hwsearch.latency.cases import Case, Spec
from hwsearch.policy import Policy
from hwsearch.tables import adaptation, reference

SHIPPED = Path(__file__).resolve().parents[1] / "latency_tables" / "cpu-1t"


def _rows(true_base: float, true_scale: dict, true_icpt: float, n: int = 10, seed: int = 0) -> list:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        terms = {"fp32": rng.uniform(50, 900), "int8": rng.uniform(0, 600), "other": rng.uniform(5, 80)}
        fixed = 6.0
        measured = true_base * fixed + true_icpt + sum(true_scale[f] * v for f, v in terms.items())
        rows.append((terms, fixed, measured))
    return rows


def test_fit_recovers_synthetic_family_offsets():
    true = {"fp32": 1.30, "int8": 0.80, "other": 1.10}
    rows = _rows(1.0, true, 4.0)
    base, scale, icpt = adaptation.fit(rows)
    assert scale["fp32"] == pytest.approx(1.30, abs=0.02) and scale["int8"] == pytest.approx(0.80, abs=0.02)
    assert 1.0 < scale["other"] <= 1.10  # ~4% of the time: the prior holds it between the machine's overall speed and its own
    fitted = adaptation.Adaptation("k", {}, base, scale, icpt)
    errs = adaptation.errors([fitted.apply(t, f) for t, f, _ in rows], [m for _, _, m in rows])
    assert max(abs(e) for e in errs) < 0.01
    assert max(abs(e) for e in adaptation.leave_one_out(rows)) < 0.03  # held-out references too


def test_a_family_the_references_never_run_keeps_the_machines_overall_speed():
    rows = [({"fp32": 400.0}, 5.0, 1.2 * 405.0), ({"fp32": 900.0}, 5.0, 1.2 * 905.0)]
    base, scale, _ = adaptation.fit(rows)
    fitted = adaptation.Adaptation("k", {}, base, scale, 0.0)
    assert base == pytest.approx(1.2, rel=1e-3) and "int8" not in scale
    assert fitted.family_scale("conv-int8-k1") == pytest.approx(1.2, rel=1e-3)  # unseen family: the overall factor
    assert adaptation.class_family("conv-fp32-dw") == "fp32" and adaptation.class_family("attn-int8") == "int8" and adaptation.class_family("reorder") == "other"


def test_reference_choice_covers_each_model_dense_and_quantized():
    shares = [{"fp32": 1.0}, {"fp32": 0.5, "int8": 0.5}, {"int8": 0.9, "other": 0.1}, {"fp32": 1.0}, {"int8": 1.0}, {"fp32": 0.2, "int8": 0.8}]
    models = ["a", "a", "a", "b", "b", "b"]
    picked = reference.select(shares, models, n=5)
    assert picked[:4] == [0, 2, 3, 4] and len(picked) == 5 and len(set(picked)) == 5
    assert sorted(reference.select(shares, models, n=20)) == list(range(6))


@pytest.fixture()
def table(tmp_path) -> Path:
    """A copy of the shipped cpu-1t table (calibrated, with stored cases) that tests may adapt."""
    out = tmp_path / "cpu-1t"
    shutil.copytree(SHIPPED, out, ignore=shutil.ignore_patterns("adaptations", "reference.json"))
    return out


def _slower(factor: float):
    """A machine exactly ``factor`` × the table's calibrated prediction: measurement replaced by that, so the fit is tested exactly."""
    def measure(jobs, settings, rounds, timing, combine="min", batch=0, lock_path=None, progress=False):
        out = []
        for spec, policy in jobs:
            ms = spec.predictor.predict(policy).latency_ms * factor
            out.append(Case(spec.name, policy.to_dict(), float("nan"), ms, ms, 1.0, 0.0, ms))
        return out
    return measure


def test_a_uniform_13pct_slowdown_is_detected_and_corrected(table):
    specs = context.reference_specs(str(table))
    assert {s.name for s in specs} == {"resnet20", "mobilenetv2", "vgg"}
    report = check.check_table(table, specs, adapt=True, measure=_slower(1.13))
    ref = json.loads((table / "reference.json").read_text())
    assert 3 <= len(ref["models"]) <= 10 and {m["model"] for m in ref["models"]} == {"resnet20", "mobilenetv2", "vgg"}
    assert all(m["measured_ms"] > 0 for m in ref["models"])  # the builder's timing of each, from the calibration's cases
    assert report["offset"] == pytest.approx(0.13, abs=0.005)
    assert report["before"]["within_10pct"] == 0.0 and report["after_leave_one_out"]["within_10pct"] == 1.0
    assert report["verdict"].startswith("off: this machine is +13.0%")
    stored = adaptation.path_of(table, report["adaptation"]["key"])
    assert stored is not None and stored.parent == table / "adaptations"
    policy = Policy.from_dict({"default_keep": 0.75, "precision": {"layer1.0.conv1": "int8"}})
    spec = next(s for s in specs if s.name == "resnet20")
    adapted = spec.ctx.predictor(str(table), adapt="require")
    assert adapted.adaptation.key == report["adaptation"]["key"] and adapted.predict(policy).adaptation == adapted.adaptation.key
    assert adapted.predict(policy).latency_ms == pytest.approx(1.13 * spec.predictor.predict(policy).latency_ms, rel=0.01)
    assert spec.ctx.predictor(str(table), adapt="off").predict(policy).latency_ms == pytest.approx(spec.predictor.predict(policy).latency_ms)
    again = check.check_table(table, specs, measure=_slower(1.13))  # a second check sees the stored adaptation fit
    assert again["verdict"].startswith("fits with this machine's adaptation") and "adaptation" not in again


@pytest.mark.parametrize("here", [8, 16])
def test_a_cnn_table_built_for_another_nchwc_block_says_to_build_one_here(table, monkeypatch, here):
    """An adaptation rescales kernels; it cannot turn 16-wide NCHWc layouts into 8-wide ones: the check says so."""
    monkeypatch.setattr("hwsearch.runtime.session.detect_block", lambda settings: here)
    specs = context.reference_specs(str(table))
    built = int(json.loads((table / "meta.json").read_text())["nchwc_block"])
    report = check.check_table(table, specs, measure=_slower(1.0))
    if here == built:
        assert "layout" not in report and "blocks channels by" not in report["verdict"]
    else:
        assert report["layout"] == {"table_nchwc_block": built, "here_nchwc_block": here}
        assert f"blocks channels by {built} and this one blocks by {here}" in report["verdict"] and "build_tables.sh" in report["verdict"]


def test_an_adaptation_from_another_machine_is_not_applied_and_names_both(table):
    specs = context.reference_specs(str(table))
    report = check.check_table(table, specs, adapt=True, measure=_slower(0.9))
    path = adaptation.path_of(table, report["adaptation"]["key"])
    data = json.loads(path.read_text())
    data["fingerprint"]["cpu_model"] = "Some Other CPU 9000"
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="Some Other CPU 9000.*this machine is"):
        pred = specs[0].ctx.predictor(str(table), adapt="auto")
    assert pred.adaptation is None
    with pytest.raises(HwsearchError, match="no adaptation for this machine.*check-table"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        specs[0].ctx.predictor(str(table), adapt="require")


def test_a_corrupt_adaptation_or_reference_file_is_a_one_line_error(table):
    (table / "adaptations").mkdir()
    (table / "adaptations" / "0123456789abcdef.json").write_text('{"key": "0123456789abcdef", "fingerprint": ')
    with pytest.raises(HwsearchError) as err:
        adaptation.load_all(table)
    assert "is corrupt" in str(err.value) and "check-table" in str(err.value) and "\n" not in str(err.value)
    (table / "reference.json").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(HwsearchError, match="Reference models file .* is corrupt"):
        reference.load(table)


def test_reference_models_keep_the_task_options_their_shapes_need(tmp_path, capsys):
    """A table profiled at a task option other than its default (digits at 16 px) gets reference models
    that are rebuilt at that option when checked elsewhere (a path option stays on its machine: tests/test_fashion.py)."""
    from hwsearch.cli import main
    from hwsearch.tasks.photos import PhotosTask

    assert PhotosTask(normalize="tf").options() == {"normalize": "tf"} and PhotosTask().options() == {}
    table = tmp_path / "t16"
    model = ["--task-option", "size=16", "--model", "resnet20", "--model-option", "widths=[8,16,32]"]
    assert main(["profile", "--device", "t16", "--out", str(table), *model, "--warmup", "1", "--min-runs", "3", "--min-time", "0", "--passes", "1", "--quiet"]) == 0
    capsys.readouterr()
    ctx = context.build("digits", "resnet20", task_options={"size": 16}, model_options={"widths": [8, 16, 32]}, random_init=True)
    ref = check.derive_reference(table, [Spec(ctx.baseline.model_spec, ctx, ctx.predictor(str(table), adapt="off"))], n=2)
    assert ref["models"] and all(m["task_options"] == {"size": 16} for m in ref["models"])
    assert [s.ctx.task.input_size for s in context.reference_specs(str(table))] == [(16, 16)]


def test_the_automatic_checks_modes(table, monkeypatch, capsys):
    ref = check.derive_reference(table, context.reference_specs(str(table)), n=3)
    assert len(ref["models"]) == 3
    assert context.ensure_adaptation(DeviceSpec("cpu-1t", str(table), adapt="off")) == {"mode": "off", "adaptation": None}
    with pytest.raises(HwsearchError, match='adapt = "require"'):
        context.ensure_adaptation(DeviceSpec("cpu-1t", str(table), adapt="require"))
    assert not (table / "adaptations").exists()
    used = context.ensure_adaptation(DeviceSpec("cpu-1t", str(table), adapt="auto"), progress=True)  # really times the 3 reference models here
    assert used["mode"] == "auto" and used["check"]["machine"]["threads"] == 1 and (table / "adaptations" / f"{used['adaptation']}.json").is_file()
    assert "checking the table here" in capsys.readouterr().err

    def no_measuring(*args, **kwargs):
        raise AssertionError("a matching adaptation must be used without measuring")

    monkeypatch.setattr("hwsearch.latency.check.check_table", no_measuring)
    assert context.ensure_adaptation(DeviceSpec("cpu-1t", str(table), adapt="require"))["adaptation"] == used["adaptation"]
    monkeypatch.setenv(adaptation.ADAPT_ENV, "sometimes")
    with pytest.raises(HwsearchError, match=r"\$HWSEARCH_ADAPT='sometimes' is unknown; use one of auto, off, require"):
        context.ensure_adaptation(DeviceSpec("cpu-1t", str(table)))


def test_config_takes_the_adapt_mode_per_device(tmp_path):
    from hwsearch.config import parse_config

    raw = {"name": "x", "devices": {"cpu-1t": {"table": str(SHIPPED), "adapt": "require"}}}
    assert parse_config(raw, "x", tmp_path).devices[0].adapt == "require"
    raw["devices"]["cpu-1t"]["adapt"] = "always"
    with pytest.raises(HwsearchError, match="devices.cpu-1t.adapt.*one of auto, off, require"):
        parse_config(raw, "x", tmp_path)


def test_export_warns_beyond_three_times_the_tables_rmspe_or_5pct():
    from hwsearch.export.verify import latency_warnings, warn_tolerance

    assert warn_tolerance(None) == 0.05 and warn_tolerance(0.01) == 0.05 and warn_tolerance(0.03) == pytest.approx(0.09)
    assert latency_warnings({"d": 1.0}, {"d": 1.06}, {"d": 0.01}) and "beyond ±5%" in latency_warnings({"d": 1.0}, {"d": 1.06}, {"d": 0.01})[0]
    assert not latency_warnings({"d": 1.0}, {"d": 1.06}, {"d": 0.03})
    assert not latency_warnings({"d": 1.0}, {"d": 1.04}) and latency_warnings({"d": 1.0}, {"d": 0.94})


def test_a_damaged_calibration_file_is_a_one_line_error(table):
    from hwsearch.tables.calibration import load_calibration

    (table / "calibration.json").write_text('{"schema": 1, "scale": ')
    with pytest.raises(HwsearchError) as err:
        load_calibration(table)
    assert "is damaged" in str(err.value) and "calibrate-table" in str(err.value) and "\n" not in str(err.value)

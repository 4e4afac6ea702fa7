"""Dashboard data (fronts, hypervolume, dense point, zoom, winners) on known inputs, a real small run
read by the dashboard and by optuna-dashboard's API, the rendered page, and the CLI."""

from __future__ import annotations

import atexit
import functools
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from hwsearch.cli import main
from hwsearch.dashboard import render
from hwsearch.dashboard.data import Series, TrialPoint, data_record, device_front, device_panel, hypervolume_curve, load_dashboard_data
from hwsearch.dashboard.reference import dense_point, hv_reference, is_dense, plotted_range, score_floor
from hwsearch.dashboard.sections import zoom_note
from hwsearch.results import hypervolume
from tests.synthetic_run import random_records, write_run

BUDGETS = {"cpu-1t": 1.2, "cpu-2t": 1.6}


DENSE = {"keep": {"g": 1.0}, "precision": {"l": "fp32"}, "default_keep": 1.0, "default_precision": "fp32"}


def _t(n: int, acc: float, lat: float, feasible: bool = True, state: str = "COMPLETE", policy: dict | None = None) -> TrialPoint:
    return TrialPoint(n, state, acc, {"d": lat}, feasible, policy=policy or {"default_keep": 0.5})


def test_device_front_keeps_feasible_non_dominated_by_latency():
    trials = [_t(0, 0.90, 1.0), _t(1, 0.80, 0.5), _t(2, 0.85, 1.2), _t(3, 0.95, 2.0, feasible=False), _t(4, 0.99, 0.1, state="FAIL")]
    front = device_front(trials, "d")
    assert front.trials == (1, 0) and front.x == (0.5, 1.0) and front.y == (0.80, 0.90)


def test_hypervolume_curve_on_known_points():
    trials = [_t(0, 0.7, 1.0), _t(1, 0.95, 0.2, feasible=False), _t(2, 0.9, 1.5), _t(3, 0.6, 1.9)]
    curve = hypervolume_curve(trials, "d", (0.5, 2.0), "s")
    assert curve.x == (0, 1, 2, 3)
    assert curve.y == pytest.approx((0.2, 0.2, 0.3, 0.3))  # 1.0*0.2; infeasible trial 1 ignored; trial 3 is dominated
    assert curve.y[-1] == pytest.approx(0.5 * 0.2 + 0.5 * 0.4)
    assert hypervolume_curve(trials, "d", (0.5, 2.0), "s", scale=0.5).y[-1] == pytest.approx(0.6)


def test_hypervolume_curve_is_monotone_and_ends_at_the_full_hypervolume():
    recs = random_records(40, ["d"], {"d": 1.0}, seed=3)
    trials = [TrialPoint(r.number, r.state, r.accuracy, r.latency_ms, r.feasible) for r in recs]
    ref = (0.6, 1.0)
    curve = hypervolume_curve(trials, "d", ref)
    assert all(b >= a for a, b in zip(curve.y, curve.y[1:])) and curve.y[-1] > 0
    assert curve.y[-1] == pytest.approx(hypervolume([(t.accuracy, t.latency_ms["d"]) for t in trials if t.feasible], ref))


def test_flat_trial_attrs_are_numbers_per_device_and_drop_none():
    from hwsearch.search.labels import trial_attrs

    policy = {"keep": {"a": 1.0, "b": 0.5}, "precision": {"x": "int8", "y": "fp32", "z": "int8", "w": "int8"}, "default_keep": 1.0, "default_precision": "fp32"}
    attrs = {"policy": policy, "latency_ms": {"cpu-1t": 0.8, "cpu-2t": 0.5}, "coverage": {"cpu-1t": 1.0}, "params": 10, "macs": None, "error": None}
    out = trial_attrs(attrs, {"cpu-1t": 1.0}, ("fp32", "int8", "int8d"))
    assert "macs" not in out and "error" not in out and out["latency_ms"] == attrs["latency_ms"]  # the dict attribute stays
    assert out["latency_ms:cpu-2t"] == 0.5 and out["coverage:cpu-1t"] == 1.0 and out["budget_ms:cpu-1t"] == 1.0
    assert out["slack_ms:cpu-1t"] == pytest.approx(0.2) and "slack_ms:cpu-2t" not in out
    assert (out["share:int8"], out["share:fp32"], out["share:int8d"], out["keep_mean"]) == (0.75, 0.25, 0.0, 0.75)


def test_dense_point_floor_and_plotted_range():
    assert is_dense(DENSE) and is_dense({"default_keep": 1.0}) and not is_dense({}) and not is_dense(DENSE | {"precision": {"l": "int8"}})
    s = Series("search", (_t(0, 0.98, 2.0, policy=DENSE), _t(1, 0.10, 0.3), _t(2, 0.97, 0.5), _t(3, 0.12, 0.2)))
    dense = dense_point([s], "d")
    assert (dense.score, dense.latency_ms, dense.trial) == (0.98, 2.0, 0)
    floor = score_floor([s], dense)
    assert floor == pytest.approx(0.98 * 0.75)
    lo, hi = plotted_range([t.accuracy for t in s.trials], floor)
    assert 0.96 < lo < 0.97 and 0.98 < hi < 0.99  # the collapsed trials (0.10, 0.12) are outside the initial range


def test_hypervolume_reference_is_the_fronts_nadir_not_the_worst_trial():
    fronts = [(0.975, 1.0), (0.97, 0.5), (0.10, 0.3)]
    dense = dense_point([Series("s", (_t(0, 0.98, 2.0, policy=DENSE),))], "d")
    score, lat = hv_reference(fronts, [(0.98, 2.0), *fronts], dense, 0.735, None)
    assert lat == pytest.approx(2.2) and score == pytest.approx(0.97 - 0.05 * 0.005)  # collapsed 0.10 is under the floor
    assert hv_reference(fronts, fronts, dense, 0.735, 1.5)[1] == 1.5  # a budget below 1.1x dense is the ceiling


def test_hypervolume_keeps_rising_after_the_warm_starts():
    """A collapsed warm start neither sets the reference nor the range: the later trials' gains show."""
    warm = [_t(0, 0.98, 2.0, policy=DENSE), _t(1, 0.975, 1.0), _t(2, 0.10, 0.3)]
    later = [_t(3, 0.97, 0.5), _t(4, 0.978, 0.8), _t(5, 0.965, 0.4)]
    panel = device_panel([Series("search (nsga2)", tuple(warm + later))], "d", None, {0, 1, 2})
    hv = panel.hypervolume[0].y
    assert hv[-1] > 1.4 * hv[2] > 0  # the trials after the warm starts add more than 40%
    assert panel.below.trials == (2,) and panel.below_count == {"search (nsga2)": 1} and panel.warm.trials == (0, 1, 2)
    assert panel.below.y[0] == panel.score_range[0]  # drawn on the range's lower edge
    note = zoom_note([panel])
    assert "1 trials score below 0.735" in note and "Double-click" in note


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    recs = random_records(50, list(BUDGETS), BUDGETS, seed=0, quality=0.05)
    base = {"uniform": random_records(14, list(BUDGETS), BUDGETS, seed=1), "random": random_records(50, list(BUDGETS), BUDGETS, seed=2)}
    run = write_run(tmp_path_factory.mktemp("dash"), "demo", BUDGETS, recs, baselines=base)
    folder = run / "export" / "3"
    folder.mkdir(parents=True)
    folder.joinpath("manifest.json").write_text(json.dumps({"trial": 3, "ok": True, "predicted_latency_ms": {"cpu-1t": 0.5, "cpu-2t": 0.7},
                                                            "measured_latency_ms": {"cpu-1t": 0.55, "cpu-2t": None}}))
    return run


def test_data_from_a_run_directory(run_dir):
    data = load_dashboard_data(run_dir)
    assert data.devices == ("cpu-1t", "cpu-2t") and [p.budget_ms for p in data.panels] == [1.2, 1.6]
    assert [f.label for f in data.panels[0].fronts] == ["search (nsga2)", "uniform", "random"]
    recs = {r.number: r for r in random_records(50, list(BUDGETS), BUDGETS, seed=0, quality=0.05)}
    panel = data.panels[0]
    assert set(panel.feasible.trials) == {n for n, r in recs.items() if r.state == "COMPLETE" and r.feasible}
    assert set(panel.infeasible.trials) == {n for n, r in recs.items() if r.state == "COMPLETE" and not r.feasible}
    assert all(lat <= 1.2 for lat in panel.fronts[0].x)
    pareto = {e["trial"] for e in json.loads((run_dir / "pareto.json").read_text())}
    assert set(panel.fronts[0].trials) <= pareto and {w.trial for w in data.winners} == pareto
    assert [len(c.y) for c in panel.hypervolume] == [50, 14, 50]
    assert [(e.trial, e.device, e.measured_ms) for e in data.exports] == [(3, "cpu-1t", 0.55), (3, "cpu-2t", None)]
    assert len(data.table_rows) == 50 + 14 + 50 and "latency_ms:cpu-2t" in data.table_columns


def test_page_is_self_contained(run_dir):
    page = render(load_dashboard_data(run_dir))
    assert not re.search(r"<script[^>]+src=", page) and "cdn.plot.ly/plotly" not in page.split("</head>")[1]
    assert len(page) > 3_000_000  # plotly.js is inline
    assert "data-js-errors" in page and page.count('class="plotly-graph-div"') == 4
    trials = page.split('id="trials"')[1].split("</table>")[0]
    assert trials.count("<tr>") == 1 + 114 and "hwSort" in page
    assert 'id="winners"' in page and "Hypervolume over trials" in page


def test_ort_defaults_are_shown_measured_beside_the_winners(run_dir, tmp_path):
    """``--baseline ort-default``'s records (baselines/ort-default/ort-default.json) get their own table, measured figures as stored."""
    assert "Not measured for this run yet" in render(load_dashboard_data(run_dir))
    run = tmp_path / "demo"
    shutil.copytree(run_dir, run)
    records = [{"name": "dense", "call": "torch.onnx.export (fp32)", "accuracy": 0.98, "test_score": 0.97, "measured_ms": {"cpu-1t": 2.0, "cpu-2t": 1.2},
                "speedup": {"cpu-1t": 1.0, "cpu-2t": 1.0}, "predicted_ms": {"cpu-1t": 2.1, "cpu-2t": 1.3}, "size_bytes": 4000},
               {"name": "ort-static-u8s8", "call": "quantize_static(QDQ, QUInt8)", "accuracy": 0.975, "test_score": 0.97, "measured_ms": {"cpu-1t": 0.8, "cpu-2t": 0.5},
                "speedup": {"cpu-1t": 2.5, "cpu-2t": 2.4}, "predicted_ms": {"cpu-1t": 0.9, "cpu-2t": None}, "size_bytes": 1000}]
    (run / "baselines" / "ort-default").mkdir(parents=True)
    (run / "baselines" / "ort-default" / "ort-default.json").write_text(json.dumps({"kind": "ort-default", "records": records, "rounds": 5}))
    data = load_dashboard_data(run)
    assert [r["name"] for r in data.ort_defaults] == ["dense", "ort-static-u8s8"] and data_record(data)["ort_defaults"][1]["speedup"]["cpu-1t"] == 2.5
    table = render(data).split('id="ortdefaults"')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 2 and "2.50×" in table and "0.800" in table and "quantize_static(QDQ, QUInt8)" in table
    assert [f.label for f in data.panels[0].fronts] == ["search (nsga2)", "uniform", "random"]  # not drawn as a front: its speedups are measured


def test_cli_writes_dashboard_and_reports_bad_dirs(run_dir, tmp_path, capsys):
    assert main(["dashboard", str(run_dir), "--winner", "3"]) == 0
    assert (run_dir / "dashboard.html").stat().st_size > 3_000_000 and "dashboard.html" in capsys.readouterr().out
    assert main(["dashboard", str(tmp_path)]) == 2
    assert "has no config.json and trials table" in capsys.readouterr().err


def test_serve_without_optuna_dashboard_says_how_to_install(run_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    assert main(["dashboard", str(run_dir), "--serve"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'hwsearch[dashboard]'" in err and len(err.strip().splitlines()) == 1


def test_serve_starts_optuna_dashboard_on_loopback(run_dir):
    pytest.importorskip("optuna_dashboard")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "hwsearch", "dashboard", str(run_dir), "--serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert f"http://127.0.0.1:{port}/" in proc.stdout.readline()
        body = ""
        for _ in range(60):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.25)
        assert '"demo"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- a real small run: the search's study as optuna-dashboard sees it, and the dashboard's record ---------------------------------

@functools.lru_cache(maxsize=1)
def real_run() -> Path:
    """A real 4-trial search (tiny resnet20, workers=0, fp32) whose first two trials are warm starts
    (uniform keep 1.0 = the dense fp32 model, and 0.5), plus a manifest in export's grouped format for trial 1."""
    from hwsearch.config import load_config
    from hwsearch.search import run_search
    from hwsearch.search.baselines import warm_start
    from tests.search_helpers import write_config

    root = Path(tempfile.mkdtemp(prefix="hwdash-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # shared by test_dashboard and test_browser: removed when the session ends
    cfg = load_config(write_config(root, "real", n_trials=4, warm_start=[1.0, 0.5], budget_ms=50.0))
    run_search(cfg, prepare=warm_start(cfg), progress=False)
    run = Path(cfg.output_dir)
    entry = next(e for e in json.loads((run / "pareto.json").read_text()) if e["trial"] == 1) if (run / "pareto.json").is_file() else None
    if entry is not None:
        (run / "export" / "1").mkdir(parents=True)
        pred = entry["latency_ms"]["cpu-1t"]
        manifest = {"schema_version": 2, "trial": 1, "ok": True, "model": {"file": "model.onnx"},
                    "scores": {"metric": "accuracy", "test_accuracy": 0.9, "validation_accuracy": entry["accuracy"]},
                    "latency": {"cpu-1t": {"predicted_ms": pred, "measured_ms": pred * 1.1, "dense_measured_ms": pred * 2.2}}}
        (run / "export" / "1" / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    return real_run()


def _wsgi_get(app, path: str) -> dict:
    from wsgiref.util import setup_testing_defaults

    env: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(env)
    status = []
    body = b"".join(app(env, lambda s, h, exc=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:200])
    return json.loads(body)


@pytest.mark.slow
def test_optuna_dashboard_api_reports_our_metric_names_attrs_and_notes(real):
    pytest.importorskip("optuna_dashboard")
    from optuna_dashboard import wsgi

    from hwsearch.search.labels import note_winners
    from hwsearch.search.study import storage_url

    assert note_winners(storage_url(real), "real", {1: "## trial 1\nexported: export/1/model.onnx"}) is True
    app = wsgi(storage_url(real))
    study_id = next(s["study_id"] for s in _wsgi_get(app, "/api/studies")["study_summaries"] if s["study_name"] == "real")
    detail = _wsgi_get(app, f"/api/studies/{study_id}")
    assert detail["objective_names"] == ["accuracy", "latency_ms:cpu-1t"] and detail["directions"] == ["maximize", "minimize"]
    sortable = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    assert sortable["latency_ms:cpu-1t"] and sortable["slack_ms:cpu-1t"] and sortable["share:fp32"] and sortable["params"] and sortable["keep_mean"]
    assert not sortable["latency_ms"]  # the dict attribute is kept beside the flat one
    study_attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert study_attrs["devices"] == "cpu-1t" and study_attrs["budget_ms:cpu-1t"] == "50.0" and json.loads(study_attrs["config"])["name"] == "real"
    trials = {t["number"]: t for t in detail["trials"]}
    attrs = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
    assert attrs["share:fp32"] == "1.0" and attrs["keep_mean"] == "1.0" and float(attrs["slack_ms:cpu-1t"]) == pytest.approx(50.0 - float(attrs["latency_ms:cpu-1t"]))
    assert "exported: export/1/model.onnx" in trials[1]["note"]["body"] and trials[0]["note"]["body"] == ""


@pytest.mark.slow
def test_real_run_dashboard_record(real, capsys):
    assert main(["dashboard", str(real), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    panel = record["panels"][0]
    assert record["info"]["warm_starts"] == [0, 1] and panel["warm"]["trials"][:2] == [0, 1]
    assert panel["dense"]["trial"] == 0 and panel["reference"][1] == pytest.approx(min(50.0, panel["dense"]["latency_ms"] * 1.1))
    assert record["info"]["started"] and record["info"]["tables"][0]["sha256"] and record["info"]["config"]["name"] == "real"
    rows = {r["trial"]: r for r in record["winner_rows"]}
    assert rows[1]["source"] == "export" and rows[1]["test_score"] == 0.9 and rows[1]["file"] == "export/1/model.onnx"
    assert rows[1]["speedup"]["cpu-1t"] == pytest.approx(2.0) and rows[1]["speedup_basis"]["cpu-1t"] == "measured"
    assert all(r["source"] == "predicted" and r["file"] == "" for n, r in rows.items() if n != 1)
    assert record["dense_row"]["predicted_ms"]["cpu-1t"] == panel["dense"]["latency_ms"]
    data = load_dashboard_data(real)
    assert data_record(data) == record


def test_run_info_reads_a_builtin_table_named_in_config_json():
    """config.json names built-in tables builtin:NAME; the run facts still show the table's version."""
    from hwsearch.dashboard.runinfo import table_info
    from hwsearch.tables.table import read_meta

    info = table_info("cpu-1t", {"table": "builtin:cpu-1t"}, {})
    meta = read_meta(Path(__file__).resolve().parents[1] / "latency_tables" / "cpu-1t")
    assert info.path == "builtin:cpu-1t" and info.sha256 == meta["table_sha256"][:12] and info.fields["threads"] == 1

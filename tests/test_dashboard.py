"""Dashboard data (fronts, hypervolume, feasibility) on known inputs, the rendered page, and the CLI."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hwsearch.cli import main
from hwsearch.dashboard import render
from hwsearch.dashboard.data import Series, TrialPoint, device_front, hypervolume_curve, load_dashboard_data, reference_point
from hwsearch.results import hypervolume
from tests.synthetic_run import random_records, write_run

BUDGETS = {"cpu-1t": 1.2, "cpu-2t": 1.6}


def _t(n: int, acc: float, lat: float, feasible: bool = True, state: str = "COMPLETE") -> TrialPoint:
    return TrialPoint(n, state, acc, {"d": lat}, feasible)


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


def test_hypervolume_curve_is_monotone_and_ends_at_the_full_hypervolume():
    recs = random_records(40, ["d"], {"d": 1.0}, seed=3)
    trials = [TrialPoint(r.number, r.state, r.accuracy, r.latency_ms, r.feasible) for r in recs]
    ref = reference_point([Series("s", tuple(trials))], "d", 1.0)
    curve = hypervolume_curve(trials, "d", ref)
    assert all(b >= a for a, b in zip(curve.y, curve.y[1:])) and curve.y[-1] > 0
    assert curve.y[-1] == pytest.approx(hypervolume([(t.accuracy, t.latency_ms["d"]) for t in trials if t.feasible], ref))


def test_reference_point_uses_budget_and_worst_accuracy():
    s = Series("s", (_t(0, 0.7, 1.0), _t(1, 0.6, 3.0, feasible=False)))
    acc, lat = reference_point([s], "d", 2.0)
    assert acc == pytest.approx(0.6) and acc < 0.6 and lat == 2.0
    assert reference_point([s], "d", None)[1] == pytest.approx(3.03)


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
    assert page.count("<tr>") == 1 + 114 and "hwSort" in page


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

"""The search driver in-process (workers = 0): failures are data, seeds reproduce, fronts are right."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from hwsearch.config import load_config
from hwsearch.results import dominates, is_feasible, load_pareto
from hwsearch.search import evaluate, run_baseline, run_search
from hwsearch.search.baselines import uniform_points
from hwsearch.search.study import storage_url
from tests.search_helpers import write_config


@pytest.fixture(autouse=True)
def _tiny_baseline(tiny_resnet) -> None:
    """Train (or load) the tiny resnet20 the configs name once, before any search starts."""


def _policies(run_dir: Path) -> list[str]:
    table = pd.read_csv(run_dir / "trials.csv").sort_values("number")
    return list(table["policy"])


def test_failing_trial_becomes_fail_and_search_goes_on(tmp_path: Path, monkeypatch) -> None:
    real = evaluate.realise

    def flaky(ctx, policy, out_path, **kwargs):
        if Path(out_path).name == "trial1.onnx":
            raise RuntimeError("boom: injected failure")
        return real(ctx, policy, out_path, **kwargs)

    monkeypatch.setattr(evaluate, "realise", flaky)
    cfg = load_config(write_config(tmp_path, "fail", n_trials=3, budget_ms=0.55))
    stats = run_search(cfg, progress=False)
    assert (stats.completed, stats.failed, stats.session_failed) == (3, 1, 1)
    table = pd.read_csv(Path(cfg.output_dir) / "trials.csv")
    failed = table[table.state == "FAIL"]
    assert list(failed.number) == [1] and "boom: injected failure" in failed.error.iloc[0]
    assert (table.state == "COMPLETE").sum() == 3
    _check_front(Path(cfg.output_dir), table, cfg.budgets)
    log = (Path(cfg.output_dir) / "search.log").read_text()  # what the session said, the failed trial's error and traceback included
    assert "trial 1 failed" in log and "RuntimeError: boom: injected failure" in log and 'File "' in log and "trial 3 complete" in log


def _check_front(run_dir: Path, table: pd.DataFrame, budgets: dict) -> None:
    """pareto.json holds exactly the feasible, non-dominated completed trials."""
    done = table[table.state == "COMPLETE"]
    pts = {int(r.number): (r.accuracy, r["latency_ms:cpu-1t"]) for _, r in done.iterrows()}
    feasible = {n for n, (_, lat) in pts.items() if is_feasible({"cpu-1t": lat}, budgets)}
    expected = {n for n in feasible if not any(dominates(pts[m], pts[n], (True, False)) for m in feasible if m != n)}
    front = load_pareto(run_dir)
    assert {e["trial"] for e in front} == expected
    for e in front:
        assert e["latency_ms"]["cpu-1t"] <= budgets["cpu-1t"] and e["accuracy"] == pytest.approx(pts[e["trial"]][0])
        assert set(e) >= {"trial", "accuracy", "latency_ms", "size_bytes", "params", "macs", "policy"} and e["policy"]["keep"]


def test_same_seed_same_policies_and_user_attrs(tmp_path: Path) -> None:
    import optuna

    runs = []
    for name in ("a", "b"):
        cfg = load_config(write_config(tmp_path, name, n_trials=5, population_size=2, budget_ms=0.6))
        run_search(cfg, progress=False)
        runs.append(Path(cfg.output_dir))
    assert _policies(runs[0]) == _policies(runs[1]) and len(set(_policies(runs[0]))) > 1
    saved = json.loads((runs[0] / "config.json").read_text())
    assert saved["name"] == "a" and saved["n_trials"] == 5 and (runs[0] / "trials.parquet").is_file()
    assert saved["model"] == "resnet20" and saved["space"]["channel_multiple"] == 8  # the resolved config: the task's model, the family's multiple
    study = optuna.load_study(study_name="a", storage=f"sqlite:///{runs[0] / 'study.db'}")
    attrs = study.trials[0].user_attrs
    assert {"policy", "latency_ms", "params", "macs", "size_bytes", "eval_seconds", "coverage"} <= set(attrs)
    assert study.trials[0].constraints.keys() == {"latency_ms:cpu-1t"}
    # a finished run resumes to a no-op; a larger budget continues it
    again = run_search(load_config(write_config(tmp_path, "a", n_trials=6, population_size=2, budget_ms=0.6)), progress=False)
    assert (again.completed, again.session_completed) == (6, 1)


def test_resume_refuses_a_different_experiment(tmp_path: Path) -> None:
    from hwsearch.errors import HwsearchError

    cfg = load_config(write_config(tmp_path, "x", n_trials=1))
    run_search(cfg, progress=False)
    with pytest.raises(HwsearchError, match="seed"):
        run_search(load_config(write_config(tmp_path, "x", n_trials=1, seed=3)), progress=False)


def test_baselines_live_beside_the_main_run(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "base", n_trials=2, space={"keep_choices": [0.5, 1.0], "precisions": ["fp32"]}))
    uni = run_baseline(cfg, "uniform", progress=False)
    assert uni.completed == len(uniform_points((0.5, 1.0))) == 4
    table = pd.read_csv(Path(cfg.output_dir) / "baselines" / "uniform" / "trials.csv").sort_values("number")
    policies = [json.loads(p) for p in table.policy]
    assert [(set(p["keep"].values()), set(p["precision"].values())) for p in policies] == [
        ({0.5}, {"fp32"}), ({0.5}, {"int8"}), ({1.0}, {"fp32"}), ({1.0}, {"int8"})]
    rnd = run_baseline(cfg, "random", progress=False)
    assert rnd.completed == 2 and (Path(cfg.output_dir) / "baselines" / "random" / "pareto.json").is_file()
    from hwsearch.export.winners import recorded_study  # export finds a baseline's study (NAME-uniform), not the config's name

    for kind in ("uniform", "random"):
        assert recorded_study(Path(cfg.output_dir) / "baselines" / kind) == f"base-{kind}"
    assert recorded_study(tmp_path) is None


def test_warm_start_policies_are_the_first_trials_and_must_fit_the_space(tmp_path: Path) -> None:
    from hwsearch.errors import HwsearchError
    from hwsearch.search.baselines import warm_start

    (tmp_path / "p.json").write_text(json.dumps({"default_keep": 0.5, "keep": {}, "precision": {}}))
    cfg = load_config(write_config(tmp_path, "ws", n_trials=2, warm_start=[1.0], warm_start_policies=[str(tmp_path / "p.json")]))
    run_search(cfg, prepare=warm_start(cfg), progress=False)
    first = [json.loads(p) for p in _policies(Path(cfg.output_dir))]
    assert set(first[0]["keep"].values()) == {1.0} and set(first[1]["keep"].values()) == {0.5}
    study = optuna.load_study(study_name=cfg.name, storage=storage_url(Path(cfg.output_dir)))
    assert all(t.system_attrs.get("NSGAIISampler:generation") == 0 for t in study.trials)  # warm starts are NSGA-II parents too
    # one group at a time: after the uniform warm start, each group alone at keep 0.5, in the space's order
    lw = load_config(write_config(tmp_path, "lw", n_trials=3, warm_start=[1.0], warm_start_layerwise=[0.5]))
    run_search(lw, prepare=warm_start(lw), progress=False)
    pruned = [[g for g, r in json.loads(p)["keep"].items() if r != 1.0] for p in _policies(Path(lw.output_dir))[:3]]  # the rest wait for a resume
    assert pruned[0] == [] and len(pruned[1]) == len(pruned[2]) == 1 and pruned[1] != pruned[2]
    (tmp_path / "bad.json").write_text(json.dumps({"default_keep": 0.625}))
    bad = load_config(write_config(tmp_path, "ws2", n_trials=1, warm_start_policies=[str(tmp_path / "bad.json")]))
    with pytest.raises(HwsearchError, match=r"warm_start_policies\[0\]: keep 0.625 .* not one of space.keep_choices"):
        run_search(bad, prepare=warm_start(bad), progress=False)


def test_search_ends_on_its_summary_and_a_finished_run_says_so(tmp_path: Path, tiny_resnet, capsys) -> None:
    from hwsearch.cli import main

    path = write_config(tmp_path, "sum", n_trials=3, space={"keep_choices": [0.5, 1.0], "precisions": ["fp32"]})
    assert main(["search", str(path), "--quiet", "--baseline", "uniform"]) == 0
    assert capsys.readouterr().out.startswith("Search sum: 4 of 4 trials complete")
    assert main(["search", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "sum"
    front, dense = load_pareto(run), json.loads((run / "dense.json").read_text())
    assert out.startswith("Search sum: 3 of 3 trials complete (3 this session, 0 failed in all); ") and "eval_wait_s" not in out
    assert dense["score"] == tiny_resnet.val_accuracy and dense["split"] == "val" and dense["params"] == sum(p.numel() for p in tiny_resnet.model.parameters())
    rows = [line.split() for line in out.splitlines() if line.startswith(("  front ", "  dense fp32 ", "  uniform "))]
    assert rows[0][:2] == ["dense", "fp32"] and rows[0][-3:] == [f"{dense['latency_ms']['cpu-1t']:.3f}", "1.00x", f"{dense['params']:,}"]
    searched = [r for r in rows if r[0] == "front"]
    assert [int(r[1]) for r in searched] == [e["trial"] for e in front] and any(r[0] == "uniform" for r in rows)
    for row, e in zip(searched, front):
        assert row[3:5] == [f"{e['latency_ms']['cpu-1t']:.3f}", f"{dense['latency_ms']['cpu-1t'] / e['latency_ms']['cpu-1t']:.2f}x"]
    assert any(r[-2:] == ["warm", "start"] for r in searched)  # the dense warm start (keep 1.0) is on the front
    assert f"hwsearch export {run} --pareto" in out and f"hwsearch dashboard {run}" in out and str(run / "study.db") in out and str(run / "search.log") in out
    # a finished run: nothing is run again, the summary is printed again (here as JSON)
    assert main(["search", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["already_complete"] and record["completed"] == 3 and record["session"]["session_completed"] == 0
    assert [p["trial"] for p in record["front"]] == [e["trial"] for e in front] and record["dense"]["latency_ms"] == dense["latency_ms"]
    assert [p["warm_start"] for p in record["front"]] == [p["trial"] in (0, 1) for p in record["front"]]  # warm starts 1.0 and 0.5 are trials 0, 1
    assert list(record["baselines"]) == ["uniform"] and record["files"]["pareto"] == str(run / "pareto.json")
    assert main(["search", str(path), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("Search sum: already complete (3 trials); nothing was run.")
    log = (run / "search.log").read_text()
    assert "trial 0 complete: score" in log and log.count(" summary:") == 3 and "already complete (3 trials)" in log
    assert len((run / "sessions.jsonl").read_text().splitlines()) == 3

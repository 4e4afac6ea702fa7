"""What a search ends on, as plain data: the front against the dense model and the baselines, where
the files are, and what to run next (the command line renders it; ``--json`` prints it whole).

- The **dense reference** (``runs/NAME/dense.json``, :func:`write_dense`): the unpruned fp32 model's
  score (the baseline's, on the split trials are scored on) and its predicted latency per device
  (the same predictors and machine adaptation the trials used), written once per session.
- Every point carries its **speedup** per device: dense latency / its latency.
- **Warm starts** (of the main run) are the study's enqueued trials (:func:`hwsearch.search.labels.warm_start_numbers`).
- **Baselines**: the fronts of ``runs/NAME/baselines/*/pareto.json`` (for a baseline run: the main
  run's front and the other baselines).
- **ONNX Runtime's defaults** (``--baseline ort-default``): its recipes as measured in their own run,
  beside the dense fp32 file measured in the same rounds (``baselines/ort-default/ort-default.json``);
  they are listed apart from the fronts because their speedups are measured, not predicted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwsearch.config import read_saved_config
from hwsearch.policy import Policy
from hwsearch.results import atomic_write, load_pareto

DENSE_FILE = "dense.json"
ORT_DEFAULT = "ort-default"  # hwsearch.search.ort_default.KIND (its records are read, not its module imported)
ORT_FIELDS = ("name", "call", "accuracy", "test_score", "measured_ms", "speedup", "predicted_ms", "size_bytes", "notes")
LOG_FILE = "search.log"


@dataclass(frozen=True)
class Point:
    """One row of the summary: a front member, the dense model or a baseline's front member."""

    source: str  # "search", "dense", or a baseline's kind ("uniform", "random")
    trial: int | None
    score: float | None
    latency_ms: Mapping[str, float]
    speedup: Mapping[str, float]
    params: int | None
    warm_start: bool = False


@dataclass(frozen=True)
class Summary:
    name: str
    run_dir: str
    devices: tuple[str, ...]
    budgets: Mapping[str, float]
    split: str
    n_trials: int
    completed: int
    failed: int
    already_complete: bool
    front: tuple[Point, ...]
    dense: Point | None
    baselines: Mapping[str, tuple[Point, ...]]
    files: Mapping[str, str]
    next_commands: tuple[str, ...]
    session: Mapping[str, Any] = field(default_factory=dict)
    ort_defaults: tuple[Mapping[str, Any], ...] = ()  # ort-default.json's records (dense first), measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dense_reference(ctx) -> dict[str, Any]:
    """The dense fp32 model of ``ctx``: its score on ``ctx.options.eval_split`` (the baseline's),
    its predicted latency per configured device, its parameter count."""
    b = ctx.baseline
    score = {"val": b.val_accuracy, "test": b.test_accuracy}.get(ctx.options.eval_split)
    latency = {name: float(p.predict(Policy()).latency_ms) for name, p in ctx.predictors().items()}
    params = sum(p.numel() for p in b.model.parameters())
    return {"score": None if score is None or math.isnan(score) else float(score), "split": ctx.options.eval_split,
            "test_score": None if math.isnan(b.test_accuracy) else float(b.test_accuracy), "latency_ms": latency, "params": int(params)}


def write_dense(run_dir: Path, ctx) -> dict[str, Any]:
    dense = dense_reference(ctx)
    atomic_write(run_dir / DENSE_FILE, lambda p: p.write_text(json.dumps(dense, indent=1, sort_keys=True) + "\n"))
    return dense


def read_dense(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / DENSE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _speedup(latency: Mapping[str, float], dense: Mapping[str, float]) -> dict[str, float]:
    return {d: dense[d] / ms for d, ms in latency.items() if d in dense and ms > 0}


def _points(entries: list[dict[str, Any]], source: str, dense_ms: Mapping[str, float], warm: set[int]) -> tuple[Point, ...]:
    return tuple(Point(source, e.get("trial"), e.get("accuracy"), dict(e.get("latency_ms") or {}), _speedup(e.get("latency_ms") or {}, dense_ms),
                       e.get("params"), e.get("trial") in warm) for e in entries)


def warm_starts(run_dir: Path, study_name: str) -> set[int]:
    """Numbers of the enqueued trials (warm starts) of the study in ``run_dir/study.db``."""
    import optuna

    from hwsearch.search.labels import warm_start_numbers
    from hwsearch.search.study import storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return warm_start_numbers(optuna.load_study(study_name=study_name, storage=storage_url(run_dir)))


def main_run(run_dir: Path) -> Path:
    """The main run of ``run_dir``: itself, or ``runs/NAME`` for a baseline run ``runs/NAME/baselines/KIND``."""
    return run_dir.parent.parent if run_dir.parent.name == "baselines" else run_dir


def compared_runs(run_dir: Path) -> dict[str, Path]:
    """The runs a summary sets beside this one: the baselines of a main run; for a baseline run
    (``runs/NAME/baselines/KIND``) the main run (``search``) and the other baselines."""
    main = main_run(run_dir)
    found = {"search": main} if main != run_dir else {}
    base = main / "baselines"
    if base.is_dir():
        found |= {d.name: d for d in sorted(base.iterdir()) if d != run_dir and d.name != ORT_DEFAULT and (d / "pareto.json").is_file()}
    return {k: v for k, v in found.items() if (v / "pareto.json").is_file()}


def _files(run_dir: Path) -> dict[str, str]:
    names = {"run_dir": "", "study": "study.db", "pareto": "pareto.json", "trials": "trials.csv", "log": LOG_FILE, "dense": DENSE_FILE,
             "dashboard": "dashboard.html", "export": "export"}
    return {k: str(run_dir / v) if v else str(run_dir) for k, v in names.items()}


def next_commands(run_dir: Path, config_path: str | None) -> tuple[str, ...]:
    main = main_run(run_dir)
    out = [f"hwsearch export {main} --pareto", f"hwsearch dashboard {main}"]
    if config_path and not (main / "baselines").is_dir():
        out.append(f"hwsearch search {config_path} --baseline uniform")
    return tuple(out)


def ort_defaults(run_dir: Path) -> tuple[dict[str, Any], ...]:
    """The measured ORT-default recipes stored for the run in ``run_dir`` (or by it, for that baseline run itself)."""
    main = main_run(run_dir)
    try:
        data = json.loads((main / "baselines" / ORT_DEFAULT / f"{ORT_DEFAULT}.json").read_text())
    except (OSError, ValueError):
        return ()
    return tuple({k: r.get(k) for k in ORT_FIELDS} for r in data.get("records") or [] if isinstance(r, dict))


def build_summary(run_dir: str | Path, session: Mapping[str, Any], config_path: str | None = None) -> Summary:
    """The summary of the run in ``run_dir`` from its files (config.json, pareto.json, study.db,
    dense.json, the baselines') and ``session`` (the :class:`~hwsearch.search.driver.SearchStats` as a dict)."""
    run_dir = Path(run_dir)
    raw = read_saved_config(run_dir / "config.json")
    devices = {str(k): v for k, v in (raw.get("devices") or {}).items()}
    budgets = {d: float(v["budget_ms"]) for d, v in devices.items() if isinstance(v, dict) and v.get("budget_ms") is not None}
    dense = read_dense(run_dir) or {}
    dense_ms = dense.get("latency_ms") or {}
    baseline_run = run_dir.parent.name == "baselines"  # a baseline's sweep is enqueued whole: no warm starts to mark
    warm = set() if baseline_run else warm_starts(run_dir, str(session.get("study") or raw.get("name")))
    own_ort = baseline_run and run_dir.name == ORT_DEFAULT  # its recipes are listed, measured, apart from the fronts
    front = () if own_ort else _points(load_pareto(run_dir), "search", dense_ms, warm)
    dense_point = Point("dense", None, dense.get("score"), dense_ms, {d: 1.0 for d in dense_ms}, dense.get("params")) if dense else None
    baselines = {kind: _points(load_pareto(d), kind, dense_ms, warm_starts(d, str(raw.get("name"))) if kind == "search" else set())
                 for kind, d in compared_runs(run_dir).items()}
    return Summary(str(raw.get("name")), str(run_dir), tuple(devices), budgets, str(dense.get("split", "val")), int(raw.get("n_trials", 0)),
                   int(session.get("completed", 0)), int(session.get("failed", 0)), bool(session.get("already_complete", False)),
                   front, dense_point, baselines, _files(run_dir), next_commands(run_dir, config_path), dict(session), ort_defaults(run_dir))

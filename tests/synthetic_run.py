"""Small run directories in the layout `hwsearch search` writes, for export and dashboard tests.

The files are written with the search's own writers (``ExperimentConfig.save``, ``results.write_results``)
and a real Optuna SQLite study, so tests read exactly what a real run holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hwsearch.config import derive, parse_config
from hwsearch.results import TrialRecord, write_results


def write_table(root: Path, name: str, threads: int = 1) -> Path:
    """A latency table directory (table.csv + meta.json) with the settings export measures with."""
    path = root / "latency_tables" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "table.csv").write_text("op,input_shape,out_channels,kernel,stride,groups,precision,latency_ms\nConv,1x1x32x32,16,3,1,1,fp32,0.01\n")
    meta = {"device": name, "threads": threads, "runtime": "onnxruntime", "provider": "CPUExecutionProvider",
            "session": {"threads": threads, "provider": "CPUExecutionProvider", "graph_optimization": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL"},
            "measurement": {"warmup": 5, "min_runs": 30, "min_time_s": 0.01}}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def record(number: int, accuracy: float | None, latency_ms: Mapping[str, float], policy: Mapping, budgets: Mapping[str, float],
           state: str = "COMPLETE", params: int = 1000) -> TrialRecord:
    feasible = state == "COMPLETE" and all(latency_ms.get(d, 1e9) <= b for d, b in budgets.items())
    return TrialRecord(number, state, accuracy, dict(latency_ms), {d: 1.0 for d in latency_ms}, params, params * 100, params * 4,
                       1.0, feasible, "" if state == "COMPLETE" else "boom", dict(policy))


def random_records(n: int, devices: Sequence[str], budgets: Mapping[str, float], seed: int, quality: float = 0.0) -> list[TrialRecord]:
    """``n`` trials on an accuracy/latency trade-off curve; ``quality`` shifts accuracy up."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = float(rng.uniform(0.1, 1.0))
        acc = min(0.99, 0.5 + 0.45 * size ** 0.5 - float(rng.uniform(0, 0.15)) + quality * (i / n))
        lat = {d: round(0.2 + size * (1.0 + k * 0.5) + float(rng.uniform(0, 0.1)), 4) for k, d in enumerate(devices)}
        state = "FAIL" if i % 11 == 7 else "COMPLETE"
        out.append(record(i, None if state == "FAIL" else round(acc, 4), lat if state == "COMPLETE" else {}, {"default_keep": round(size, 3)}, budgets, state))
    return out


def write_study(run_dir: Path, name: str, devices: Sequence[str], records: Sequence[TrialRecord]) -> None:
    """A real Optuna SQLite study holding ``records`` as trials with the driver's user attributes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{(run_dir / 'study.db').resolve()}",
                                directions=["maximize"] + ["minimize"] * len(devices))
    for r in records:
        attrs = {"policy": dict(r.policy), "latency_ms": dict(r.latency_ms), "params": r.params, "macs": r.macs, "size_bytes": r.size_bytes}
        complete = r.state == "COMPLETE"
        values = [r.accuracy] + [r.latency_ms[d] for d in devices] if complete else None
        state = optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(values=values, state=state, user_attrs=attrs | ({} if complete else {"error": "boom"})))


def write_run(root: Path, name: str, devices: Mapping[str, float | None], records: Sequence[TrialRecord], *, model: str = "vgg",
              model_options: Mapping | None = None, train=None, compress: Mapping | None = None, sampler: str = "nsga2",
              baselines: Mapping[str, Sequence[TrialRecord]] | None = None) -> Path:
    """``root/runs/name`` with config.json, study.db, trials.csv/parquet, pareto.json (and baselines)."""
    tables = {d: write_table(root, d) for d in devices}
    raw = {"name": name, "task": "digits", "model": model, "model_options": dict(model_options or {}), "sampler": sampler,
           "baseline": asdict(train) if train is not None else {}, "compress": dict(compress or {}), "output_dir": str(root / "runs" / name),
           "devices": {d: {"table": str(tables[d])} | ({"budget_ms": b} if b is not None else {}) for d, b in devices.items()}}
    cfg = parse_config(raw, name, root)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True)
    cfg.save(run_dir / "config.json")
    write_study(run_dir, name, list(devices), records)
    write_results(run_dir, records, cfg.objective_names)
    for kind, recs in (baselines or {}).items():
        (run_dir / "baselines" / kind).mkdir(parents=True)
        derive(cfg, sampler="random").save(run_dir / "baselines" / kind / "config.json")
        write_results(run_dir / "baselines" / kind, recs, cfg.objective_names)
    return run_dir

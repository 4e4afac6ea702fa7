"""Prediction throughput: latency-table predictions per second vs end-to-end measurements per second.

    HWSEARCH_CACHE=/tmp/hwcache .venv/bin/python experiments/bench_predict.py [--policies 2000] [--measured 4]

For every shipped table (latency_tables/*/) and every digits model (resnet20, mobilenetv2, vgg):

- predictions/s: ``Predictor.predict`` timed over --policies random policies (the validation's
  random_policy: pruning and mixed precision), predictor loaded once (load time reported apart);
- measurements/s: --measured random policies realised end to end the way ``hwsearch validate-table``
  does (``compress.realise`` with ``options.LATENCY_ONLY``, unscored: prune, export, quantize) and timed with the table's
  session settings and the validation's measurement settings (3 interleaved passes of >= 100 runs),
  the timing under the machine-wide measurement lock. Reported as build+measure and measure only.

Writes experiments/results/bench_predict.csv and bench_predict.json (machine, settings).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info, measure_lock, write_csv, write_json  # noqa: E402


def bench_table(table_dir: Path, model: str, n_pred: int, n_meas: int, rounds: int, tmp: Path) -> dict:
    import torch

    from hwsearch import context
    from hwsearch.compress import realise
    from hwsearch.latency.cases import random_policy
    from hwsearch.options import LATENCY_ONLY
    from hwsearch.runtime.session import SessionSettings
    from hwsearch.runtime.timing import MeasureSettings, time_model
    from hwsearch.tables.table import load_table

    torch.set_num_threads(1)
    # the space the tables were profiled for (the family's defaults: channel multiple 8); realised as validate-table does
    ctx = context.build("digits", model, options=LATENCY_ONLY, verbose=True)
    space = ctx.space
    t0 = time.perf_counter()
    predictor = ctx.predictor(str(table_dir))  # as the search loads it (calibration included)
    load_s = time.perf_counter() - t0
    rng = random.Random(0)
    policies = []
    for _ in range(n_pred):  # policies the table can predict (a kernel family it lacks is an error, counted)
        p = random_policy(space, rng)
        try:
            predictor.predict(p)
            policies.append(p)
        except Exception:  # noqa: BLE001
            pass
    unpredictable = n_pred - len(policies)
    t0 = time.perf_counter()
    for p in policies:
        predictor.predict(p)
    pred_s = time.perf_counter() - t0
    n_pred = len(policies)

    meta = load_table(table_dir).meta
    settings = SessionSettings(threads=int(meta["threads"]))
    ms = MeasureSettings(min_runs=100, min_time_s=0.1)
    t0 = time.perf_counter()
    paths = []
    for i in range(n_meas):
        path = tmp / f"{table_dir.name}-{model}-{i}.onnx"
        realise(ctx, policies[i], path, score=False)
        paths.append(path)
    build_s = time.perf_counter() - t0
    meas_s = 0.0
    for _ in range(rounds):
        for path in paths:
            with measure_lock():  # time spent waiting for the lock is not counted
                t0 = time.perf_counter()
                time_model(path, settings, ms)
                meas_s += time.perf_counter() - t0
    row = {"table": table_dir.name, "threads": int(meta["threads"]), "model": model, "predictor_load_s": round(load_s, 3),
           "policies_predicted": n_pred, "unpredictable_policies": unpredictable, "predictions_per_s": round(n_pred / pred_s, 1),
           "policies_measured": n_meas, "build_s_per_policy": round(build_s / n_meas, 3), "measure_s_per_policy": round(meas_s / n_meas, 3),
           "measurements_per_s": round(n_meas / (build_s + meas_s), 3), "measure_only_per_s": round(n_meas / meas_s, 3)}
    row["prediction_speedup"] = round(row["predictions_per_s"] / row["measurements_per_s"], 0)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2", "vgg"])
    ap.add_argument("--tables", nargs="+", default=[str(p.parent) for p in sorted(Path("latency_tables").glob("*/table.csv"))])
    ap.add_argument("--policies", type=int, default=2000, help="random policies predicted per (table, model)")
    ap.add_argument("--measured", type=int, default=4, help="random policies built and measured per (table, model)")
    ap.add_argument("--rounds", type=int, default=3, help="measurement passes (as validate-table)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwbench-pred-") as tmp:
        for table in args.tables:
            covered = json.loads((Path(table) / "meta.json").read_text()).get("models", [])
            for model in (m for m in args.models if f"digits/{m}" in covered):  # tables of other tasks are skipped
                rows.append(bench_table(Path(table), model, args.policies, args.measured, args.rounds, Path(tmp)))
    write_csv(RESULTS / "bench_predict.csv", rows)
    write_json(RESULTS / "bench_predict.json", {"command": ".venv/bin/python experiments/bench_predict.py " + " ".join(sys.argv[1:]),
                                               "policies": args.policies, "measured": args.measured, "rounds": args.rounds, "machine": machine_info()})
    print(f"wrote {RESULTS}/bench_predict.csv", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Pretrained EfficientNet-Lite0 on ImageNet photos at 224 px: dense fp32 vs hwsearch int8 vs ORT's one-line quantization vs searches.

    HWSEARCH_CACHE=/tmp/hwcache .venv/bin/python experiments/bench_photos.py [--run RUN_DIR ...] [--rounds 5]

The imagenet-photos task (no training): the dense fp32 export, every conv/linear in hwsearch's static
int8 (``{"default_precision": "int8"}``) and ORT's one-line ``quantize_static`` of the dense file (its
defaults: QDQ, int8 activations and weights, MinMax; and with uint8 activations), plus every file
``hwsearch export RUN_DIR --pareto`` wrote for each ``--run`` (a search's front, or a ``--baseline
uniform`` / ``random`` run's). Every file is scored on the test split (72 views of photos no
calibration saw): top-1 agreement with the dense model, mean KL(dense || file), dense top-1 in the
file's top 5, and top-1 accuracy on the labeled photos; all files are timed together at 1 ORT thread,
batch 1 (``--rounds`` interleaved rounds under the measurement lock, the dense file at both ends of
each round, each file keeping its fastest round). Writes experiments/results/photos_lite0.json
(``total_s``: this pass; ``search_s``: the searches and exports before it).

``--search`` first runs the searches themselves into ``--runs`` (default runs/photos_bench):
``hwsearch search experiments/imagenet_lite0.toml`` with each of ``--samplers`` and ``--seeds``
(seeds outer, so a cut-short run still has every sampler at the first seeds), its ``--baseline
uniform`` sweep once, and ``hwsearch export RUN --pareto --rounds 1`` of each (this pass re-times
them all together); finished runs and exports are reused, a killed search resumes. About 10 min per
40-trial search and 2-7 min per export (one rebuild per front point) on a 2-core machine; the table must exist first
(experiments/build_imagenet_tables.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info, measure_lock, write_json  # noqa: E402
from bench_edge import ORT, exported  # noqa: E402

INT8 = {"default_precision": "int8"}
CONFIG = Path(__file__).resolve().parent / "imagenet_lite0.toml"


def searched(root: Path, samplers: list[str], seeds: list[int]) -> list[Path]:
    """Run (or resume) each sampler x seed of experiments/imagenet_lite0.toml and the uniform sweep, export each front; their run directories."""
    from hwsearch.cli import main as hwsearch

    def call(*argv: str) -> None:
        print("hwsearch " + " ".join(argv), file=sys.stderr, flush=True)
        if hwsearch(list(argv)) != 0:
            raise SystemExit(f"hwsearch {' '.join(argv)} failed")

    runs = []
    for seed in seeds:
        for sampler in samplers:
            run = root / f"{CONFIG.stem}_{sampler}_s{seed}"
            call("search", str(CONFIG), "--set", f"sampler={json.dumps(sampler)}", "--set", f"seed={seed}", "--set", f"output_dir={json.dumps(str(run))}", "--quiet")
            runs.append(run)
            if len(runs) == 1:  # the uniform sweep, beside the first run
                call("search", str(CONFIG), "--set", f"output_dir={json.dumps(str(run))}", "--baseline", "uniform", "--quiet")
                runs.append(run / "baselines" / "uniform")
    for run in runs:
        if not (run / "export" / "index.json").is_file():
            call("export", str(run), "--pareto", "--rounds", "1")
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--table", default="latency_tables/imagenet-cpu-1t", help="the 1-thread table whose timing settings are used")
    ap.add_argument("--work", default="/tmp/hwbench-photos", help="ONNX files (reused when present)")
    ap.add_argument("--out", default="photos_lite0", help="results file name under experiments/results")
    ap.add_argument("--run", action="append", default=[], metavar="RUN_DIR", help="add a run's exported files (hwsearch export RUN_DIR --pareto) to the pass")
    ap.add_argument("--search", action="store_true", help="run the searches (and their exports) first; each --samplers x --seeds run and the uniform sweep join the pass")
    ap.add_argument("--runs", default="runs/photos_bench", help="where --search puts its run directories")
    ap.add_argument("--samplers", nargs="+", default=["guided", "nsga2", "random"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    runs = [Path(r) for r in args.run]
    for run in runs:  # before any search: a bad --run must not wait for them
        if not (run / "export").is_dir():
            ap.error(f"--run {str(run)!r} holds no export/; run hwsearch export {run} --pareto first")
    began = time.time()
    if args.search:
        runs += searched(Path(args.runs), args.samplers, args.seeds)
    search_s = round(time.time() - began) if args.search else None

    from hwsearch import context
    from hwsearch.compress.realise import onnx_outputs, realise
    from hwsearch.config import DeviceSpec, load_config
    from hwsearch.policy import Policy
    from hwsearch.search.ort_default import build_models, measure_interleaved

    start = time.time()
    cfg = load_config(CONFIG)  # the searches' task, model, task options and calibration, from their own config
    ctx = context.from_config(cfg, verbose=True)
    out = Path(args.work)
    built = build_models(ctx, out, ORT)
    files = {name: path for name, (_, path) in built.items()}
    files["int8 (every layer)"] = out / "int8_every_layer.onnx"
    if not files["int8 (every layer)"].is_file():
        realise(ctx, Policy.from_dict(INT8), files["int8 (every layer)"], score=False)
    extra = exported(runs)
    files |= {name: path for name, (path, _, _) in extra.items()}
    policies = {"int8 (every layer)": INT8} | {name: policy for name, (_, policy, _) in extra.items()}
    with measure_lock():
        ms, notes = measure_interleaved([DeviceSpec("cpu-1t", str(Path(args.table).resolve()))], files, ctx.task.latency_feed(), args.rounds)
    dense = ms["dense"]["cpu-1t"]
    targets, labels = ctx.task.targets("test", ctx.baseline.model), ctx.task.split("test").y
    rows = {}
    for name, path in files.items():
        m = ctx.task.metrics(onnx_outputs(ctx.task, path, "test"), targets, labels)
        rows[name] = {"ms": ms[name]["cpu-1t"], "speedup": round(dense / ms[name]["cpu-1t"], 3), **{k: round(v, 5) for k, v in m.items()},
                      "size_mb": round(path.stat().st_size / 1e6, 2), "policy": policies.get(name), "call": built.get(name, (None,))[0]}
        print(f"{name}: {rows[name]}", file=sys.stderr)
    result = {"command": "python experiments/bench_photos.py " + " ".join(sys.argv[1:]), "machine": machine_info(), "rounds": args.rounds, "threads": 1,
              "model": cfg.model, "task_options": dict(cfg.task_options), "test_inputs": int(len(labels)), "notes": notes, "files": rows, "total_s": round(time.time() - start), "search_s": search_s}
    path = write_json(RESULTS / f"{args.out}.json", result)
    print(json.dumps({"wrote": str(path), "seconds": result["total_s"]}))


if __name__ == "__main__":
    main()

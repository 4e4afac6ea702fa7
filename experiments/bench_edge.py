"""Pretrained edge CNNs on Fashion-MNIST: dense fp32 vs hwsearch int8 vs uniform pruning vs ORT's one-line quantization.

    HWSEARCH_CACHE=/tmp/hwcache .venv/bin/python experiments/bench_edge.py [--steps 150] [--rounds 5]

Per model (mobilenetv2_imagenet, efficientnet_lite0; their fashion baselines fine-tuned and cached):
the dense fp32 export, every conv/linear in static int8 (``{"default_precision": "int8"}``), uniform
pruning (keep 0.75 in fp32 and int8, keep 0.5 in int8; each distilled for ``--steps`` steps from the
dense model, then BatchNorm re-estimated) and ORT's one-line ``quantize_static`` of the dense file
(its defaults: QDQ, int8 activations and weights, MinMax; and with uint8 activations). Every file is
scored on the 10,000 official test images and all files of a model are timed together at 1 ORT
thread, batch 1 (``--rounds`` interleaved rounds under the measurement lock, the dense file at both
ends of each round, each file keeping its fastest round). ``--run MODEL=RUN_DIR`` (repeatable) adds
the files ``hwsearch export RUN_DIR --pareto`` wrote for that model (a search's front, or a
``--baseline uniform`` sweep's) to the same pass, so the search stands beside what a user gets
without it. Writes experiments/results/edge_fashion.json (``--out NAME``: NAME.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info, measure_lock, write_json  # noqa: E402

MODELS = {"mobilenetv2_imagenet": "imagenet", "efficientnet_lite0": "tf"}
TRAIN = {"efficientnet_lite0": {"steps": 1200}}  # as experiments/fashion_lite0.toml's [baseline]: Lite0 needs twice the fine-tuning steps
DATA = {"efficientnet_lite0": {"train_size": 20000}}  # and its [task_options]: twice the fine-tuning images
POLICIES = {"int8 (every layer)": {"default_precision": "int8"},
            "uniform keep 0.75 fp32": {"default_keep": 0.75},
            "uniform keep 0.75 int8": {"default_keep": 0.75, "default_precision": "int8"},
            "uniform keep 0.5 int8": {"default_keep": 0.5, "default_precision": "int8"}}
ORT = ("ort-static-s8s8", "ort-static-u8s8")


def exported(runs: list[Path]) -> dict[str, tuple[Path, dict]]:
    """Every exported file of the run directories: "<run name> trial N" -> (model.onnx, policy, recovery steps or None)."""
    out = {}
    for run in runs:
        for manifest in sorted((run / "export").glob("*/manifest.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1):
            m = json.loads(manifest.read_text())
            if (manifest.parent / "model.onnx").is_file():
                out[f"{run.name} trial {m['trial']}"] = (manifest.parent / "model.onnx", m["policy"], (m.get("recovery") or {}).get("steps") if (m.get("recovery") or {}).get("kept") == "recovered" else None)
    return out


def bench_model(model: str, normalize: str, steps: int, rounds: int, work: Path, table: str, runs: list[Path]) -> dict:
    from hwsearch import context
    from hwsearch.compress.realise import realise, score_onnx
    from hwsearch.config import DeviceSpec
    from hwsearch.options import CompressOptions
    from hwsearch.policy import Policy
    from hwsearch.search.ort_default import build_models, measure_interleaved

    ctx = context.build("fashion", model, task_options={"normalize": normalize, **DATA.get(model, {})}, train=TRAIN.get(model), verbose=True,
                        options=CompressOptions(finetune_steps=steps, bn_recalib_batches=16, eval_split="test"))
    out = work / model
    built = build_models(ctx, out, ORT)
    files = {name: path for name, (_, path) in built.items()}
    seconds = {}
    for name, policy in POLICIES.items():
        start = time.perf_counter()
        path = out / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}.onnx"
        if not path.is_file():
            realise(ctx, Policy.from_dict(policy), path, score=False)
        files[name] = path
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{model}: {name} realised ({seconds[name]} s)", file=sys.stderr)
    extra = exported(runs)
    files |= {name: path for name, (path, _, _) in extra.items()}
    policies = POLICIES | {name: policy for name, (_, policy, _) in extra.items()}
    recovered = {name: steps for name, (_, _, steps) in extra.items() if steps}  # shipped after `hwsearch export --recover-steps N`
    device = DeviceSpec("cpu-1t", table)
    with measure_lock():
        ms, notes = measure_interleaved([device], files, ctx.task.latency_feed(), rounds)
    dense = ms["dense"]["cpu-1t"]
    rows = {}
    for name, path in files.items():
        rows[name] = {"ms": ms[name]["cpu-1t"], "speedup": round(dense / ms[name]["cpu-1t"], 3), "test_accuracy": round(score_onnx(ctx, path, "test"), 4),
                      "size_mb": round(path.stat().st_size / 1e6, 2), "policy": policies.get(name), "call": built.get(name, (None,))[0], "realise_s": seconds.get(name),
                      "recovered_steps": recovered.get(name)}
        print(f"{model}: {name}: {rows[name]}", file=sys.stderr)
    return {"baseline_train": TRAIN.get(model, {}), "task_options": DATA.get(model, {}), "baseline_test_accuracy": ctx.baseline.test_accuracy, "baseline_val_accuracy": ctx.baseline.val_accuracy, "checkpoint": str(ctx.baseline.checkpoint),
            "params": sum(p.numel() for p in ctx.baseline.model.parameters()), "notes": notes, "files": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--steps", type=int, default=150, help="distillation steps after uniform pruning")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--table", default="latency_tables/edge-cpu-1t", help="the 1-thread table whose timing settings are used")
    ap.add_argument("--work", default="/tmp/hwbench-edge", help="ONNX files (reused when present)")
    ap.add_argument("--out", default="edge_fashion", help="results file name under experiments/results (each name is its own BENCHMARKS.md section)")
    ap.add_argument("--run", action="append", default=[], metavar="MODEL=RUN_DIR", help="add a run's exported files (hwsearch export RUN_DIR --pareto) to MODEL's pass")
    args = ap.parse_args()
    runs: dict[str, list[Path]] = {}
    for item in args.run:
        model, _, run = item.partition("=")
        if model not in MODELS or not (Path(run) / "export").is_dir():
            ap.error(f"--run {item!r}: use MODEL=RUN_DIR with MODEL one of {', '.join(MODELS)} and a run directory holding export/ (hwsearch export RUN_DIR --pareto)")
        runs.setdefault(model, []).append(Path(run))
    start = time.time()
    result = {"command": "python experiments/bench_edge.py " + " ".join(sys.argv[1:]), "machine": machine_info(), "steps": args.steps, "rounds": args.rounds,
              "threads": 1, "models": {}}
    for model in args.models:
        result["models"][model] = bench_model(model, MODELS[model], args.steps, args.rounds, Path(args.work), str(Path(args.table).resolve()), runs.get(model, []))
    result["total_s"] = round(time.time() - start)
    path = write_json(RESULTS / f"{args.out}.json", result)
    print(json.dumps({"wrote": str(path), "seconds": result["total_s"]}))


if __name__ == "__main__":
    main()

"""MiniLM: front points picked per speedup target, before and after recovery (issue 18's table).
Writes experiments/results/recover_minilm.json.

1. ``hwsearch search experiments/minilm_cpu.toml`` with int8d in the space (as bench_quant.py) into ``--work``
   (skipped when ``--work`` already holds a finished run).
2. ``hwsearch export RUN --targets ... --recover-steps N``, as a user runs it: every front point rebuilt and
   measured beside the dense fp32 model (interleaved rounds), one point picked per target, the picks
   distilled from the dense model, re-quantized, verified and measured again.
3. ``hwsearch export RUN --trial T --recover-steps N`` for the most accurate front point (search score) with
   at least ``--params-cut`` fewer encoder-layer (non-embedding) parameters than the dense model.
4. One more interleaved pass (``--rounds`` rounds, under the measurement lock) over the dense file, ORT's
   one-line ``quantize_dynamic`` (per-channel) of it and every picked file, so the table's speedups and the
   baseline a user would take instead come from the same rounds.
Every score is the mean cosine to the dense model's embeddings on the test split (scored by export).
A phase whose output is already in ``--work`` (a finished search, recovered picks) is not run again.

    .venv/bin/python experiments/bench_recover.py --steps 1000    # about 45 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info, measure_lock  # noqa: E402
from bench_quant import CONFIG, search  # noqa: E402


def hwsearch(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "hwsearch"), *args], check=True)


def encoder_params() -> tuple[int, int]:
    """(all, embedding) parameters of the dense model."""
    from hwsearch.families.encoder.model import load_encoder

    model = load_encoder()
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.embeddings.parameters())


def row(export: Path, trial: int, device: str, embedding: int, dense_layers: int, why: str) -> dict:
    m = json.loads((export / str(trial) / "manifest.json").read_text())
    r = m.get("recovery") or {}
    lat = m["latency"][device]
    metric = m["scores"]["metric"]
    return {"why": why, "trial": trial, "policy": m["policy"], "measured_ms": lat["measured_ms"], "speedup": lat["speedup_vs_dense"],
            "params": m["model"]["params"], "encoder_layer_params_cut": round(1 - (m["model"]["params"] - embedding) / dense_layers, 4),
            "test_cosine_before": (r.get("before") or {}).get(f"test_{metric}", m["scores"].get(f"test_{metric}")),
            "test_cosine_after": m["scores"].get(f"test_{metric}"), "kept": r.get("kept"), "steps": r.get("steps"), "recovery_s": r.get("seconds"),
            "val_cosine_before": (r.get("before") or {}).get(f"validation_{metric}"), "val_cosine_after": m["scores"].get(f"validation_{metric}")}


def recovered(export: Path, trial: int, steps: int) -> bool:
    path = export / str(trial) / "manifest.json"
    return path.is_file() and (json.loads(path.read_text()).get("recovery") or {}).get("steps") == steps


def side_by_side(run: Path, export: Path, rows: list[dict], rounds: int) -> dict:
    """Dense, ORT's per-channel dynamic int8 and every picked file, timed in one interleaved pass and scored on test."""
    from hwsearch import context
    from hwsearch.compress.realise import score_onnx
    from hwsearch.config import load_config
    from hwsearch.search.ort_default import build_models, measure_interleaved

    cfg = context.resolve(load_config(run / "config.json"))
    ctx = context.from_config(cfg)
    built = build_models(ctx, run.parent / "ort", ("ort-dynamic-per-channel",))
    files = {name: path for name, (_, path) in built.items()} | {f"trial {r['trial']}": export / str(r["trial"]) / "model.onnx" for r in rows}
    with measure_lock():
        ms, notes = measure_interleaved(cfg.devices, files, ctx.task.latency_feed(), rounds)
    dev = cfg.devices[0].name
    return {"rounds": rounds, "notes": notes, "files": {name: {"ms": ms[name][dev], "speedup": round(ms["dense"][dev] / ms[name][dev], 4),
                                                               "test_cosine": round(score_onnx(ctx, path, "test"), 5), "size_mb": round(path.stat().st_size / 1e6, 1)}
                                                        for name, path in files.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=80)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--targets", default="2.5x,3x,3.5x")
    ap.add_argument("--params-cut", type=float, default=0.4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(f"/tmp/hwbench-recover-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = ap.parse_args()
    t0 = time.time()
    run = args.work / "run"
    if not (run / "pareto.json").is_file():
        search(args.work, args.trials)
    search_s = time.time() - t0
    export = run / "export"
    picked = json.loads((export / "targets.json").read_text()) if (export / "targets.json").is_file() else None
    if picked is None or not all(recovered(export, p["trial"], args.steps) for p in picked["picks"] if p["trial"] is not None):
        hwsearch("export", str(run), "--targets", args.targets, "--recover-steps", str(args.steps), "--rounds", str(args.rounds))
    export_s = time.time() - t0 - search_s
    total, embedding = encoder_params()
    dense_layers = total - embedding
    front = json.loads((run / "pareto.json").read_text())
    cut = [e for e in front if 1 - (e["params"] - embedding) / dense_layers >= args.params_cut]
    targets = json.loads((export / "targets.json").read_text())
    device = targets["device"]
    rows = [row(export, p["trial"], device, embedding, dense_layers, f"target {p['target']}") for p in targets["picks"] if p["trial"] is not None]
    missed = [p for p in targets["picks"] if p["trial"] is None]
    if cut:
        best = max(cut, key=lambda e: e["accuracy"])
        if not recovered(export, best["trial"], args.steps):
            hwsearch("export", str(run), "--trial", str(best["trial"]), "--recover-steps", str(args.steps), "--rounds", str(args.rounds))
        rows.append(row(export, best["trial"], device, embedding, dense_layers, f">= {args.params_cut:.0%} fewer encoder-layer params"))
    index = json.loads((export / "index.json").read_text())
    compared = side_by_side(run, export, rows, args.rounds)
    result = {"command": f"python experiments/bench_recover.py --trials {args.trials} --steps {args.steps} --targets {args.targets} --params-cut {args.params_cut} --rounds {args.rounds}",
              "config": CONFIG, "device": device, "search_s": round(search_s), "export_s": round(export_s), "total_s": round(time.time() - t0),
              "dense": index.get("dense"), "missed_targets": missed, "front_size": len(front), "machine": machine_info(), "rows": rows,
              "side_by_side": compared}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recover_minilm.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

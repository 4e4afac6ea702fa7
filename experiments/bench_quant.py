"""MiniLM: the search's front with dynamic int8 (int8d) in the space vs ONNX Runtime's one-line defaults,
measured side by side in one run (issue 14's table). Writes experiments/results/quant_minilm.json.

1. ``hwsearch search experiments/minilm_cpu.toml`` with ``space.precisions = ["fp32", "int8", "int8d"]``
   (``--trials`` trials; per-block int8d sensitivity as layerwise warm starts) into ``--work``.
2. Files: the dense fp32 export, ORT ``quantize_dynamic`` (per-channel and not), hwsearch's whole-model
   int8d and static int8, and every front point of the search (rebuilt from its policy).
3. All of them timed with the table's session settings, interleaved in ``--rounds`` rounds (each keeps
   its fastest) under the measurement lock, and scored on the test split (mean cosine to the dense
   model's embeddings).

    .venv/bin/python experiments/bench_quant.py --trials 80     # about 15 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info, measure_lock  # noqa: E402

CONFIG = "experiments/minilm_cpu.toml"
RECIPES = ("ort-dynamic-per-channel", "ort-dynamic")


def search(work: Path, trials: int) -> tuple[Path, list[str]]:
    sets = [f"n_trials={trials}", "space.precisions=['fp32', 'int8', 'int8d']", "warm_start_layerwise=['int8d', 0.875]", f"output_dir='{work / 'run'}'"]
    cmd = [str(Path(sys.executable).parent / "hwsearch"), "search", CONFIG, "--quiet"] + [a for s in sets for a in ("--set", s)]
    subprocess.run(cmd, check=True)
    return work / "run", sets


def build_files(ctx, run: Path, out: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    from hwsearch.compress import realise
    from hwsearch.policy import Policy
    from hwsearch.search.ort_default import build_models

    built = build_models(ctx, out, RECIPES)  # the dense export and ORT's recipes, as --baseline ort-default builds them
    files = {name: path for name, (_, path) in built.items()}
    info = {name: {"kind": "dense" if name == "dense" else "ort-default", "call": call} for name, (call, _) in built.items()}
    for name, prec in (("hwsearch all-int8d", "int8d"), ("hwsearch all-int8", "int8")):
        files[name] = Path(realise(ctx, Policy(default_precision=prec), out / f"{prec}.onnx", score=False).onnx_path)
        info[name] = {"kind": "uniform", "policy": Policy(default_precision=prec).to_dict()}
    for entry in json.loads((run / "pareto.json").read_text()):
        name = f"front #{entry['trial']}"
        files[name] = Path(realise(ctx, Policy.from_dict(entry["policy"]), out / f"front-{entry['trial']}.onnx", score=False).onnx_path)
        info[name] = {"kind": "front", "trial": entry["trial"], "policy": entry["policy"], "val_cosine": entry.get("accuracy")}
    return files, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path(f"/tmp/hwbench-quant-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = ap.parse_args()
    from hwsearch import context
    from hwsearch.compress.realise import score_onnx
    from hwsearch.config import load_config
    from hwsearch.config.builtin import display_name
    from hwsearch.search.ort_default import measure_interleaved

    t0 = time.time()
    run, sets = search(args.work, args.trials)
    search_s = time.time() - t0
    cfg = context.resolve(load_config(CONFIG, sets))
    ctx = context.from_config(cfg)
    files, info = build_files(ctx, run, args.work / "files")
    with measure_lock():
        load = os.getloadavg()
        ms, notes = measure_interleaved(cfg.devices, files, ctx.task.latency_feed(), args.rounds)
    dev = cfg.devices[0].name
    rows = []
    for name, path in files.items():
        rows.append(info[name] | {"name": name, "ms": ms[name][dev], "speedup": round(ms["dense"][dev] / ms[name][dev], 4),
                                  "test_cosine": round(score_onnx(ctx, path, "test"), 5), "size_mb": round(path.stat().st_size / 1e6, 1)})
    result = {"command": f"python experiments/bench_quant.py --trials {args.trials} --rounds {args.rounds}", "config": CONFIG, "set": sets, "device": dev,
              "table": display_name(cfg.devices[0].table), "rounds": args.rounds, "search_s": round(search_s), "load_before_timing": load, "notes": notes,
              "machine": machine_info(), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quant_minilm.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

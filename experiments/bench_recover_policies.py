"""MiniLM: chosen policies (not front points) distilled from the dense model (issue 18's two targets).
Writes experiments/results/recover_minilm_policies.json.

The search front of bench_recover.py cuts attention heads; these hand-picked policies cut only FFN
neurons, which recover far better. Default ``--policy`` list:
- ``policies/minilm_ffn375.json``: every FFN at keep 0.375, fp32 (41.6% fewer encoder-layer parameters);
- ``policies/minilm_ffn50_int8d.json``: every FFN at keep 0.5, every block int8d (dynamic int8).
``--task-option KEY=VALUE`` sets the config's task options, e.g. ``n_train=5000 extra_train=7000``
(every corpus sentence outside val/test, plus the standard library's source docstrings, as
distillation text); ``--out NAME`` names the results file.
1. ``hwsearch search`` with experiments/minilm_cpu.toml, the policies as its only trials (one worker),
   into ``--work`` (skipped when the run is there);
2. ``hwsearch export RUN --trial 0 --trial 1 --recover-steps N --rounds R``, as a user runs it: each
   policy distilled, re-quantized, verified and measured beside the dense fp32 model (interleaved rounds;
   finished recoveries are reused, so a second call only re-measures);
3. rows from the manifests.

    .venv/bin/python experiments/bench_recover_policies.py --steps 3000    # about 40 min on 2 idle cores
    .venv/bin/python experiments/bench_recover_policies.py --steps 3000 --policy policies/minilm_ffn50_int8d.json \
        --task-option n_train=5000 --task-option extra_train=7000 --out recover_minilm_extra --work /tmp/r18x
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RESULTS, machine_info  # noqa: E402
from bench_recover import encoder_params  # noqa: E402

HERE = Path(__file__).resolve().parent
POLICIES = ["policies/minilm_ffn375.json", "policies/minilm_ffn50_int8d.json"]


def config_text(policies: list[str], task_options: dict[str, str] | None = None) -> str:
    text = (HERE / "minilm_cpu.toml").read_text()
    for key, value in (task_options or {}).items():
        text = text.replace("[task_options]\n", f"[task_options]\n{key} = {value}\n", 1)
    subs = {"n_trials": str(len(policies)), "workers": "1", "warm_start": "[]", "warm_start_layerwise": "[]",
            "warm_start_policies": json.dumps([str(HERE / p) for p in policies]),
            "keep_choices": "[0.375, 0.5, 0.625, 0.75, 0.875, 1.0]", "precisions": '["fp32", "int8", "int8d"]'}
    for key, value in subs.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hwbench-recover-policies"))
    ap.add_argument("--policy", action="append", help="policy file relative to experiments/ (repeatable; default: the two above)")
    ap.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE", help="task option added to the config (repeatable)")
    ap.add_argument("--out", default="recover_minilm_policies", help="results file name under experiments/results/ (without .json)")
    args = ap.parse_args()
    policies = args.policy or POLICIES
    task_options = dict(o.split("=", 1) for o in args.task_option)
    t0 = time.time()
    bin_ = str(Path(sys.executable).parent / "hwsearch")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    name = "r18"
    run = work / "runs" / name
    if not (run / "study.db").exists():
        (work / f"{name}.toml").write_text(config_text(policies, task_options))
        subprocess.run([bin_, "search", f"{name}.toml", "--quiet"], cwd=work, check=True)
    trials = [str(i) for i in range(len(policies))]
    subprocess.run([bin_, "export", f"runs/{name}", *[a for t in trials for a in ("--trial", t)], "--recover-steps", str(args.steps),
                    "--rounds", str(args.rounds)], cwd=work, check=True)
    total, embedding = encoder_params()
    dense_layers = total - embedding
    index = json.loads((run / "export" / "index.json").read_text())
    rows = []
    for t, policy_file in zip(trials, policies):
        m = json.loads((run / "export" / t / "manifest.json").read_text())
        r, lat = m.get("recovery") or {}, m["latency"]["minilm-cpu-1t"]
        rows.append({"policy_file": policy_file, "policy": m["policy"], "measured_ms": lat["measured_ms"], "speedup": lat["speedup_vs_dense"],
                     "params": m["model"]["params"], "encoder_layer_params_cut": round(1 - (m["model"]["params"] - embedding) / dense_layers, 4),
                     "test_cosine_before": (r.get("before") or {}).get("test_fidelity_cosine"), "test_cosine_after": m["scores"].get("test_fidelity_cosine"),
                     "kept": r.get("kept"), "steps": r.get("steps"), "recovery_s": r.get("seconds")})
    out = {"command": "python experiments/bench_recover_policies.py " + " ".join(sys.argv[1:]), "total_s": round(time.time() - t0),
           "task_options": task_options, "dense": index["dense"], "machine": machine_info(), "rows": rows}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1))
    for row in rows:
        print(f"{row['policy_file']}: {row['speedup']:.2f}x, cosine {row['test_cosine_before']:.3f} -> {row['test_cosine_after']:.4f}, "
              f"{row['encoder_layer_params_cut']:.1%} fewer encoder-layer params")


if __name__ == "__main__":
    main()

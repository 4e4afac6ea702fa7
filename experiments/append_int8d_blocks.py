"""Append the MiniLM tables' int8d (ORT dynamic int8) blocks, measured on this machine.

    .venv/bin/python experiments/append_int8d_blocks.py latency_tables/minilm-cpu-1t [latency_tables/minilm-cpu-2t ...]

Every attention / FFN block the encoder's space can produce in int8d is exported and quantized as
whole models are (hwsearch.families.encoder.lowering.write_kernel_model), built once, and timed with
the table's own session settings and timing loop, interleaved with the same block in fp32 (a row
the table holds) in 3 rounds; the new rows are moved to the table's machine by the fp32 ratio
(hwsearch.latency.profile.append_kernels); the table's calibration, reference models and this
machine's adaptations are carried over to the new table.csv (carry_over). Creates
/tmp/hwsearch-timing.busy while timing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from hwsearch.families import get_family
from hwsearch.families.encoder.lowering import enumerate_kernels, kernel_feed, write_kernel_model
from hwsearch.latency.profile import append_kernels
from hwsearch.options import TrainConfig
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings, time_model
from hwsearch.tables import table as tbl
from hwsearch.tasks import get_task

BUSY = Path("/tmp/hwsearch-timing.busy")
NEW_CLASSES = ("attn-int8d", "ffn-int8d")


def _rewrite(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def carry_over(table_dir: str | Path, old_sha: str) -> list[str]:
    """Point the files fitted on the table before the append (calibration.json, reference.json,
    this machine's adaptations/) at the new table.csv: its old rows are unchanged, so every
    prediction without int8d is exactly what it was. The int8d classes get the calibration's
    shared block scale (carried over, not fitted); ``carried_over`` says so in each file."""
    from hwsearch.tables.adaptation import calibration_hash

    d = Path(table_dir)
    new_sha = tbl.table_hash(d)
    note = {"from_table_sha256": old_sha, "why": "rows appended (int8d blocks); the old rows and this fit are unchanged"}
    done = []
    cal = json.loads((d / "calibration.json").read_text())
    if cal.get("table_sha256") == old_sha:
        shared = sorted(v for k, v in cal["scale"].items() if k != "transition")
        cal["scale"].update({c: shared[len(shared) // 2] for c in NEW_CLASSES if c not in cal["scale"]})
        _rewrite(d / "calibration.json", cal | {"table_sha256": new_sha, "carried_over": note | {"new_classes_scale": "the median block scale"}})
        done.append("calibration.json")
    ref = json.loads((d / "reference.json").read_text()) if (d / "reference.json").is_file() else {}
    if ref.get("table_sha256") == old_sha:
        _rewrite(d / "reference.json", ref | {"table_sha256": new_sha, "carried_over": note})
        done.append("reference.json")
    for path in sorted((d / "adaptations").glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("table_sha256") == old_sha:
            _rewrite(path, data | {"table_sha256": new_sha, "calibration_sha256": calibration_hash(d), "carried_over": note})
            done.append(str(path.relative_to(d)))
    return done


def main(tables: list[str]) -> None:
    task = get_task("minilm", n_train=16, n_val=16, n_test=16)
    family = get_family("encoder")
    model = family.load_baseline(task, "all-minilm-l6-v2", {}, TrainConfig(), verbose=False).model
    space = family.search_space(model, task, precisions=("fp32", "int8", "int8d"))
    kernels = [k for k in enumerate_kernels(model, space, task.seq_len) if k.precision == "int8d"]
    with tempfile.TemporaryDirectory() as tmp:
        built: dict[str, Path] = {}

        def measure(k, settings, timing):
            if k.key not in built:
                built[k.key] = write_kernel_model(k, Path(tmp) / f"k{len(built)}.onnx")
            return time_model(built[k.key], settings, timing, feed=kernel_feed(k))

        for out in tables:
            meta = tbl.read_meta(out)
            settings = SessionSettings(**meta["session"])
            m = meta["measurement"]
            timing = MeasureSettings(int(m["warmup"]), int(m["min_runs"]), float(m["min_time_s"]), m["statistic"])
            old_sha = tbl.table_hash(out)
            BUSY.write_text(f"append_int8d_blocks {out}\n")
            try:
                entry = append_kernels(out, kernels, lambda k: dataclasses.replace(k, precision="fp32"), settings, measure, timing,
                                       "int8d attention/FFN blocks (experiments/append_int8d_blocks.py)")
            finally:
                BUSY.unlink(missing_ok=True)
            carried = carry_over(out, old_sha)
            scales = sorted(entry["scale_to_table"].values())
            print(json.dumps({"table": out, "rows": entry["rows"], "scale_min": scales[0] if scales else None,
                              "scale_median": scales[len(scales) // 2] if scales else None, "scale_max": scales[-1] if scales else None, "carried_over": carried}))


if __name__ == "__main__":
    main(sys.argv[1:])

"""``hwsearch profile``: enumerate every kernel a search space can produce and time each one here.

Each kernel runs as a tiny ONNX model (a CNN kernel, or a transformer block: the model family says
how, :meth:`~hwsearch.families.base.ModelFamily.profile_plan`) under the same ORT session settings as whole
models (threads fixed, ORT_ENABLE_ALL); after warm-up it is timed until ``min_runs`` runs and
``min_time_s`` have passed, and its p10, median and p90 minus the per-call overhead of an empty
model are kept. Predictions use the statistic ``MeasureSettings.statistic`` names (default p10: the
kernel's cost when nothing interrupts it, which stays put when other processes share the cores).

The whole kernel list is timed in ``passes`` passes, each in its own shuffled order, and a kernel's
row in table.csv is its fastest pass. A virtual machine can run slower for minutes at a time (the
host moves or shares its cores); one pass in kernel order then wrote a run of neighbouring kernels
up to 2-3x too slow, which no whole-model calibration can undo. With several shuffled passes a
kernel is wrong only if every one of its passes met a slow spell. Every pass's timing is appended
to ``passes.csv`` as it is taken (raw: the call overhead, measured once per run, is subtracted when
table.csv is written), so a killed profile resumes where it stopped; meta.json's
``pass_agreement`` says how often two passes of a kernel agreed (the profile's own noise).
"""

from __future__ import annotations

import csv
import datetime
import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.runtime.cpu import cpu_info
from hwsearch.runtime.session import SessionSettings, runtime_version
from hwsearch.runtime.timing import MeasureSettings, Timing, measure_overhead
from hwsearch.tables import table as tbl
from hwsearch.tables.kernels import Kernel


def write_meta(out: Path, device: str, settings: SessionSettings, timing: MeasureSettings, block: int, overhead_us: float, models: list[str],
               extra: dict | None = None) -> dict:
    cpu, flags = cpu_info()
    meta = {"schema": tbl.SCHEMA, "device": device, "cpu_model": cpu, "isa_flags": flags, "runtime": "onnxruntime", "runtime_version": runtime_version(),
            "provider": settings.provider, "threads": settings.threads, "session": settings.to_dict(), "nchwc_block": block, "call_overhead_us": round(overhead_us, 3),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "measurement": {**asdict(timing), "model_statistic": "p10"}, "models": models, "units": "microseconds", **(extra or {})}
    return tbl.write_meta(out, meta)  # + table.csv's row count and hash, checked on load


PASSES_FILE = "passes.csv"
PASS_COLUMNS = ("key", "pass", "p10_us", "median_us", "p90_us", "runs")


def pass_agreement(rows_by_key: dict[str, list[dict]], overhead_us: float, floor_us: float = 1.0) -> dict | None:
    """How far a kernel's slowest pass is above its fastest (p10 less the call overhead), over kernels
    of at least ``floor_us``: the profile's own noise, and how much keeping the fastest pass mattered."""
    per_kernel = ([float(r["p10_us"]) - overhead_us for r in rows] for rows in rows_by_key.values())
    spreads = [max(v) / min(v) - 1.0 for v in per_kernel if len(v) > 1 and min(v) >= floor_us]
    if not spreads:
        return None
    spreads.sort()
    return {"n_kernels": len(spreads), "within_5pct": sum(x <= 0.05 for x in spreads) / len(spreads), "within_10pct": sum(x <= 0.10 for x in spreads) / len(spreads),
            "over_50pct": sum(x > 0.5 for x in spreads) / len(spreads), "median_spread": spreads[len(spreads) // 2],
            "what": f"slowest pass / fastest pass - 1 (p10) per kernel of {floor_us:g} us or more; the table keeps the fastest"}


def _read_passes(path: Path) -> dict[tuple[str, int], dict]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {(r["key"], int(r["pass"])): r for r in csv.DictReader(f) if r.get("runs")}


def run_profile(out: str | Path, device: str, kernels: list[Kernel], settings: SessionSettings, block: int,
                models: list[str], measure: Callable[[Kernel, SessionSettings, MeasureSettings], Timing], timing: MeasureSettings = MeasureSettings(),
                progress: bool = True, extra_meta: dict[str, Any] | None = None) -> Path:
    """Measure ``kernels`` not yet in ``out/table.csv`` in ``ms.passes`` shuffled passes and add each
    one's fastest pass to table.csv; write meta.json. Resumable (``out/passes.csv`` keeps every pass).

    ``measure`` times one kernel (the model family's timer); ``extra_meta`` adds keys to meta.json
    (e.g. a transformer table's ``seq_len``).
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    old: dict = {}
    if meta_path.is_file():
        old = tbl.read_meta(out)
        if old.get("threads") != settings.threads or old.get("runtime_version") != runtime_version():
            raise HwsearchError(f"Table {str(out)!r} was profiled with threads={old.get('threads')}, runtime {old.get('runtime_version')}; use another --device name for threads={settings.threads}.")
        if old.get("schema") != tbl.SCHEMA or tbl.statistic(old) != timing.statistic:
            raise HwsearchError(f"Table {str(out)!r} has schema {old.get('schema')} and statistic {tbl.statistic(old)!r}; this profile writes schema {tbl.SCHEMA} "
                                f"with {timing.statistic!r}. Profile into a new folder (--out) or delete the old one.")
        models = sorted(set(old.get("models", [])) | set(models))
    csv_path, passes_path = out / "table.csv", out / PASSES_FILE
    kept = tbl.read_rows(csv_path)
    done = {row["key"] for row in kept}
    todo = [k for k in kernels if k.key not in done]
    taken = _read_passes(passes_path)
    overhead = measure_overhead(settings, timing)
    left = [(p, k) for p in range(timing.passes) for k in _shuffled(todo, p) if (k.key, p) not in taken]
    with passes_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PASS_COLUMNS)
        if f.tell() == 0:
            writer.writeheader()
        elif not passes_path.read_bytes().endswith(b"\n"):
            f.write("\n")  # a profile killed mid-row: its partial row stays unread (no ``runs``), the next starts clean
        for p, kernel in tqdm(left, desc=f"profile {device} ({timing.passes} passes)", unit="kernel", disable=not progress, smoothing=0.05):
            t = measure(kernel, settings, timing)
            row = {"key": kernel.key, "pass": p, "p10_us": round(t.p10_us, 3), "median_us": round(t.median_us, 3), "p90_us": round(t.p90_us, 3), "runs": t.runs}
            writer.writerow(row)
            f.flush()
            taken[(kernel.key, p)] = {k: str(v) for k, v in row.items()}
    by_key = {k.key: [taken[(k.key, p)] for p in range(timing.passes)] for k in todo}
    new_rows = []
    for kernel in todo:
        best = min(by_key[kernel.key], key=lambda r: float(r[f"{timing.statistic}_us"]))
        new_rows.append(tbl.row_for(kernel, *(max(float(best[c]) - overhead, 0.0) for c in ("p10_us", "median_us", "p90_us")), int(best["runs"])))
    tbl.write_rows(csv_path, kept + new_rows)
    agreement = pass_agreement(by_key, overhead) if timing.passes > 1 and todo else old.get("pass_agreement")
    write_meta(out, device, settings, timing, block, overhead, models, {**(extra_meta or {}), **({"pass_agreement": agreement} if agreement else {})})
    return out


def _shuffled(kernels: list[Kernel], seed: int) -> list[Kernel]:
    """Pass ``seed``'s own order, so that a slow spell hits scattered kernels, and other ones in each pass."""
    order = list(kernels)
    random.Random(seed).shuffle(order)
    return order


def _fastest(measure: Callable[[Kernel, SessionSettings, MeasureSettings], Timing], kernels: list[Kernel], settings: SessionSettings,
             timing: MeasureSettings, rounds: int) -> dict[Kernel, Timing]:
    """Each kernel's fastest of ``rounds`` interleaved rounds (by ``timing.statistic``)."""
    best: dict[Kernel, Timing] = {}
    for _ in range(rounds):
        for k in kernels:
            t = measure(k, settings, timing)
            if k not in best or t.value(timing.statistic) < best[k].value(timing.statistic):
                best[k] = t
    return best


def append_kernels(out: str | Path, kernels: list[Kernel], reference: Callable[[Kernel], Kernel], settings: SessionSettings,
                   measure: Callable[[Kernel, SessionSettings, MeasureSettings], Timing], timing: MeasureSettings, what: str, rounds: int = 3) -> dict:
    """Add ``kernels`` missing from the table at ``out``, measured on THIS machine, keeping the table's provenance.

    Each new kernel is timed interleaved with ``reference(kernel)``, a kernel the table already
    holds (the same block in fp32), in ``rounds`` rounds; its row is its time here scaled by
    table row / time here of its reference, i.e. moved to the table's machine by the ratio the two
    machines show on the reference. meta.json keeps its own provenance and gains an ``appended``
    entry (what, this machine, date, the scales, raw times); ``table_rows`` / ``table_sha256`` are
    rewritten with the table. Returns that entry."""
    out = Path(out)
    old = tbl.read_meta(out)
    if old.get("threads") != settings.threads or old.get("runtime_version") != runtime_version():
        raise HwsearchError(f"Table {str(out)!r} was profiled with threads={old.get('threads')}, runtime {old.get('runtime_version')}; append with the same threads and runtime.")
    kept = tbl.read_rows(out / "table.csv")
    rows = {r["key"]: r for r in kept}
    todo = [k for k in kernels if k.key not in rows]
    refs = {k: reference(k) for k in todo}
    missing = [r.key for r in refs.values() if r.key not in rows]
    if missing:
        raise HwsearchError(f"Reference kernel {missing[0]!r} is not in table {str(out)!r}; append only kernels whose reference the table holds.")
    overhead = measure_overhead(settings, timing)
    best = _fastest(measure, sorted(set(todo) | set(refs.values())), settings, timing, rounds)
    stat = f"{timing.statistic}_us"
    new_rows, scales, raw = [], {}, {}
    for k in todo:
        ref = refs[k]
        scale = float(rows[ref.key][stat]) / max(best[ref].value(timing.statistic) - overhead, 1e-3)
        here = [max(v - overhead, 0.0) for v in (best[k].p10_us, best[k].median_us, best[k].p90_us)]
        new_rows.append(tbl.row_for(k, *(v * scale for v in here), best[k].runs))
        scales[k.key], raw[k.key] = round(scale, 4), round(here[0], 3)
    tbl.write_rows(out / "table.csv", kept + new_rows)
    cpu, _ = cpu_info()
    entry = {"what": what, "rows": len(new_rows), "cpu_model": cpu, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
             "call_overhead_us": round(overhead, 3), "rounds": rounds, "scale_to_table": scales, "raw_p10_us_here": raw,
             "rule": "row = time here x (table row of the same block in fp32 / its time here), both fastest of the interleaved rounds"}
    tbl.write_meta(out, {**old, "appended": [*old.get("appended", []), entry]})
    return entry

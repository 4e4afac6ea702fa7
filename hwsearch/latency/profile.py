"""``hwsearch profile``: enumerate every kernel a search space can produce and time each one here.

Each kernel runs as a tiny single-kernel ONNX model under the same ORT session settings as whole
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

import contextlib
import csv
import datetime
import fcntl
import itertools
import json
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from hwsearch import onnx_io
from hwsearch.errors import HwsearchError
from hwsearch.latency import table as tbl
from hwsearch.latency.graph import _CONV_OPS, UnitGraph
from hwsearch.latency.kernels import Kernel, build_kernel_model, random_feed
from hwsearch.space import SearchSpace


@dataclass(frozen=True)
class MeasureSettings:
    warmup: int = 10
    min_runs: int = 40
    min_time_s: float = 0.03
    statistic: str = "p10"  # the table column predictions sum: p10 or median of the repeated runs (minus the call overhead); whole models are timed by p10
    passes: int = 1  # profile: shuffled passes over the kernel list; each kernel keeps its fastest pass

    def __post_init__(self) -> None:
        if self.statistic not in tbl.STATISTICS:
            raise HwsearchError(f"Timing statistic {self.statistic!r} is unknown; use one of {', '.join(tbl.STATISTICS)}.")
        if self.passes < 1:
            raise HwsearchError(f"passes={self.passes} must be 1 or more (3 keeps a VM's slow spells out of the table).")


@dataclass(frozen=True)
class Timing:
    """Repeated-run timing of one model file, in microseconds."""

    p10_us: float
    median_us: float
    p90_us: float
    runs: int

    def value(self, statistic: str) -> float:
        return self.p10_us if statistic == "p10" else self.median_us


@contextlib.contextmanager
def measuring(lock_path: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (if given) while timing, so that measurements of
    different processes on one machine never overlap."""
    if not lock_path:
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def detect_block(settings: onnx_io.SessionSettings) -> int:
    """The NCHWc block size ORT uses on this CPU (read from a transformed conv's padded weights), 0 if none."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, f"{tmp}/c.onnx")
        onnx_io.session(f"{tmp}/c.onnx", settings, optimized_path=f"{tmp}/o.onnx")
        opt = onnx.load(f"{tmp}/o.onnx").graph
    dims = [list(i.dims) for n in opt.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv" for i in opt.initializer if i.name == n.input[1]]
    return dims[0][0] if dims else 0


def time_model(path: str | Path, settings: onnx_io.SessionSettings, ms: MeasureSettings, feed: dict | None = None) -> Timing:
    """p10, median and p90 microseconds of one model file (inputs random, or ``feed``; after warm-up)."""
    sess = onnx_io.session(path, settings)
    feed = feed or random_feed(sess.get_inputs())
    for _ in range(ms.warmup):
        sess.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < ms.min_runs or time.perf_counter() - start < ms.min_time_s:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return Timing(times[int(0.1 * (len(times) - 1))], statistics.median(times), times[int(0.9 * (len(times) - 1))], len(times))


def _channel_choices(graph: UnitGraph, space: SearchSpace) -> list[tuple[int, ...]]:
    """Per tensor: every channel count the search space can give it."""
    out = []
    for src in graph.tensor_source:
        if isinstance(src, int):
            out.append((src,))
        elif src in graph.layer_group:
            g = space.groups[graph.layer_group[src]]
            out.append(tuple(sorted({space.kept_channels(g, r) for r in space.keep_choices})))
        else:
            out.append((graph.layer_channels[src],))
    return out


def enumerate_kernels(graph: UnitGraph, space: SearchSpace) -> list[Kernel]:
    """Every kernel any policy of ``space`` lowers to: all keep choices × precisions per unit and tensor."""
    choices = _channel_choices(graph, space)
    found: set[tuple] = set()
    for u in graph.units:
        x, y = u.inputs[0], u.output
        for c, co in itertools.product(choices[x], choices[y]):
            found.update(_unit_kernels(u, c, co, graph.block))
    for t, cs in enumerate(choices):
        hw = _tensor_hw(graph, t)
        for c in cs:
            for op, (prec, lay) in _CONV_OPS.items():
                if op.startswith("reorder") and c % 4:
                    continue  # ORT reorders only channel counts divisible by 4 (smaller inputs feed NCHW convs)
                found.add((op, prec, lay, c, *hw, 0, 0, 1, 1, False, False))
    return sorted(Kernel(*k) for k in found)


def _tensor_hw(graph: UnitGraph, tensor: int) -> tuple[int, int]:
    for u in graph.units:
        if tensor in u.inputs:
            return (1, 1) if u.kind == "gemm" else u.hw
    return (1, 1)


def _unit_kernels(u, c: int, co: int, block: int) -> Iterable[tuple]:
    h, w = u.hw
    if u.kind == "conv":
        g = c if u.depthwise else 1
        if u.depthwise and c != co:
            return []
        out = [("conv", "int8", "nhwc", c, h, w, co, u.k, u.s, g, False, False)]
        out += [("conv", "fp32", "nchwc", c, h, w, co, u.k, u.s, g, act, sm) for act in (False, True) for sm in (False, True)]
        return out
    if u.kind == "gemm":
        return [("gemm", p, "-", c, 1, 1, co, 0, 1, 1, False, False) for p in ("fp32", "int8")]
    if u.kind == "add":
        return [("add", "int8", "nhwc", c, h, w, 0, 0, 1, 1, False, False)] + [("add", "fp32", "nchw", c, h, w, 0, 0, 1, 1, a, False) for a in {u.act, False}]
    if u.kind in ("maxpool", "gap"):
        extra = [("maxpool", "int8", lay, c, h, w, 0, u.k, u.s, 1, False, False) for lay in ("nhwc", "nchw")] if u.kind == "maxpool" else []
        return extra + [(u.kind, "fp32", lay, c, h, w, 0, u.k, u.s, 1, False, False) for lay in ("nchwc", "nchw")]
    return [("flatten", "fp32", "nchw", c, h, w, 0, 0, 1, 1, False, False)]


def write_meta(out: Path, device: str, settings: onnx_io.SessionSettings, ms: MeasureSettings, block: int, overhead_us: float, models: list[str],
               extra: dict | None = None) -> dict:
    cpu, flags = tbl.cpu_info()
    meta = {"schema": tbl.SCHEMA, "device": device, "cpu_model": cpu, "isa_flags": flags, "runtime": "onnxruntime", "runtime_version": tbl.runtime_version(),
            "provider": settings.provider, "threads": settings.threads, "session": settings.to_dict(), "nchwc_block": block, "call_overhead_us": round(overhead_us, 3),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "measurement": {**asdict(ms), "model_statistic": "p10"}, "models": models, "units": "microseconds", **(extra or {})}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def measure_overhead(settings: onnx_io.SessionSettings, ms: MeasureSettings) -> float:
    """Microseconds of one call of an empty model (the table's statistic): the fixed per-call cost every model pays."""
    import onnx

    from hwsearch.latency._builders import empty_model

    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(empty_model(), f"{tmp}/empty.onnx")
        return min(time_model(f"{tmp}/empty.onnx", settings, MeasureSettings(ms.warmup, 200, 0.05)).value(ms.statistic) for _ in range(3))


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


def run_profile(out: str | Path, device: str, kernels: list[Kernel], settings: onnx_io.SessionSettings, block: int,
                models: list[str], ms: MeasureSettings = MeasureSettings(), progress: bool = True,
                measure: Callable[[Kernel, onnx_io.SessionSettings, MeasureSettings], Timing] | None = None,
                extra_meta: dict | None = None) -> Path:
    """Measure ``kernels`` not yet in ``out/table.csv`` in ``ms.passes`` shuffled passes and add each
    one's fastest pass to table.csv; write meta.json. Resumable (``out/passes.csv`` keeps every pass).

    ``measure`` times one kernel (default: its single-kernel CNN model, :func:`build_kernel_model`);
    ``extra_meta`` adds keys to meta.json (e.g. a transformer table's ``seq_len``).
    """
    import onnx
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    old: dict = {}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("threads") != settings.threads or old.get("runtime_version") != tbl.runtime_version():
            raise HwsearchError(f"Table {str(out)!r} was profiled with threads={old.get('threads')}, runtime {old.get('runtime_version')}; use another --device name for threads={settings.threads}.")
        if old.get("schema") != tbl.SCHEMA or tbl.statistic(old) != ms.statistic:
            raise HwsearchError(f"Table {str(out)!r} has schema {old.get('schema')} and statistic {tbl.statistic(old)!r}; this profile writes schema {tbl.SCHEMA} "
                                f"with {ms.statistic!r}. Profile into a new folder (--out) or delete the old one.")
        models = sorted(set(old.get("models", [])) | set(models))
    csv_path, passes_path = out / "table.csv", out / PASSES_FILE
    kept = tbl.read_rows(csv_path)
    done = {row["key"] for row in kept}
    todo = [k for k in kernels if k.key not in done]
    taken = _read_passes(passes_path)
    overhead = measure_overhead(settings, ms)
    left = [(p, k) for p in range(ms.passes) for k in _shuffled(todo, p) if (k.key, p) not in taken]
    with passes_path.open("a", newline="") as f, tempfile.TemporaryDirectory() as tmp:
        writer = csv.DictWriter(f, fieldnames=PASS_COLUMNS)
        if f.tell() == 0:
            writer.writeheader()
        elif not passes_path.read_bytes().endswith(b"\n"):
            f.write("\n")  # a profile killed mid-row: its partial row stays unread (no ``runs``), the next starts clean
        for p, kernel in tqdm(left, desc=f"profile {device} ({ms.passes} passes)", unit="kernel", disable=not progress, smoothing=0.05):
            if measure is not None:
                t = measure(kernel, settings, ms)
            else:
                path = Path(tmp) / "k.onnx"
                onnx.save(build_kernel_model(kernel, block), str(path))
                t = time_model(path, settings, ms)
            row = {"key": kernel.key, "pass": p, "p10_us": round(t.p10_us, 3), "median_us": round(t.median_us, 3), "p90_us": round(t.p90_us, 3), "runs": t.runs}
            writer.writerow(row)
            f.flush()
            taken[(kernel.key, p)] = {k: str(v) for k, v in row.items()}
    by_key = {k.key: [taken[(k.key, p)] for p in range(ms.passes)] for k in todo}
    new_rows = []
    for kernel in todo:
        best = min(by_key[kernel.key], key=lambda r: float(r[f"{ms.statistic}_us"]))
        new_rows.append(tbl.row_for(kernel, *(max(float(best[c]) - overhead, 0.0) for c in ("p10_us", "median_us", "p90_us")), int(best["runs"])))
    _write_rows(csv_path, kept + new_rows)
    agreement = pass_agreement(by_key, overhead) if ms.passes > 1 and todo else old.get("pass_agreement")
    write_meta(out, device, settings, ms, block, overhead, models, {**(extra_meta or {}), **({"pass_agreement": agreement} if agreement else {})})
    return out


def _shuffled(kernels: list[Kernel], seed: int) -> list[Kernel]:
    """Pass ``seed``'s own order, so that a slow spell hits scattered kernels, and other ones in each pass."""
    order = list(kernels)
    random.Random(seed).shuffle(order)
    return order


def _write_rows(path: Path, rows: list[dict]) -> None:
    """table.csv rewritten whole (via a temporary file, so a kill never leaves half a table)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=tbl.COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in tbl.COLUMNS})
    tmp.replace(path)

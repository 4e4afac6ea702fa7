"""Random whole models, realised and timed: what calibration and validation both measure.

A *case* is one policy of one model realised end to end (:func:`hwsearch.compress.realise`, no
recovery: latency does not depend on weights), its table prediction, and its measured latency: the
file is timed in ``rounds`` interleaved rounds with the table's session settings and statistic, and
the rounds are combined by ``combine`` (``min``: its fastest round, as the profile keeps each
kernel's fastest pass, so that a slow spell of the virtual machine reaches neither side of the
comparison; ``median``: the typical round). Models are realised ``batch`` at a time (0: all at
once) and each batch is timed before the next is built, so that hundreds of large files never sit
on disk together; timing a batch holds the measurement lock when one is given. The noise figures
(even vs odd rounds, CPU steal, load average) say how far any prediction can be trusted here.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsearch.errors import HwsearchError
from hwsearch.options import LATENCY_ONLY
from hwsearch.policy import Policy
from hwsearch.runtime.session import SessionSettings
from hwsearch.runtime.timing import MeasureSettings, Timing, measuring, time_model
from hwsearch.space import SearchSpace


@dataclass(frozen=True)
class Case:
    model: str
    policy: dict[str, Any]
    predicted_ms: float
    measured_ms: float
    measured_p90_ms: float
    coverage: float
    repeat_error: float | None = None  # one half of the timing rounds vs the other: the measurement's own spread
    measured_median_ms: float | None = None  # median over the rounds (measured_ms combines them as asked)

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1.0


def random_policy(space: SearchSpace, rng: random.Random) -> Policy:
    """A random policy: each group pruned with probability p_prune, each layer int8/fp16 with random odds
    (an int8 layer that can also take int8d, where the space offers it, is int8d half the time;
    spaces without int8d draw exactly as before)."""
    p_prune, p_int8, p_fp16 = rng.random(), rng.choice([0.0, 0.2, 0.5, 0.8, 1.0]), rng.choice([0.0, 0.1, 0.3])
    keep = {g.name: rng.choice(space.keep_choices) if rng.random() < p_prune else 1.0 for g in space.groups}
    prec = {}
    for layer in space.layers:
        r, choices = rng.random(), space.choices(layer)
        p = "int8" if r < p_int8 else "fp16" if r < p_int8 + p_fp16 else "fp32"
        if p == "int8" and "int8d" in choices and rng.random() < 0.5:
            p = "int8d"
        prec[layer] = p if p in choices else "fp32"
    return Policy(keep=keep, precision=prec)


@dataclass(frozen=True)
class Spec:
    """One model to measure: its name, its context (task, family, baseline, space) and its table predictor (None: only measured)."""

    name: str
    ctx: Any
    predictor: Any


@dataclass(frozen=True)
class Built:
    model: str
    policy: Policy
    path: Path
    predicted_ms: float
    coverage: float


def policies_for(space: SearchSpace, n: int, seed: int) -> list[Policy]:
    """``n`` policies of seed ``seed``: the dense model first, then random ones."""
    rng = random.Random(seed)
    return [Policy() if i == 0 else random_policy(space, rng) for i in range(n)]


def realise_case(spec: Spec, policy: Policy, path: Path) -> Built:
    """``policy`` realised without recovery or scoring, with its prediction."""
    from hwsearch.compress import realise

    realise(spec.ctx.with_options(**LATENCY_ONLY.to_dict()), policy, path, score=False)
    pred = spec.predictor.predict(policy) if spec.predictor is not None else None
    return Built(spec.name, policy, path, pred.latency_ms if pred else float("nan"), pred.coverage if pred else 1.0)


def measure_policies(jobs: Sequence[tuple[Spec, Policy]], settings: SessionSettings, rounds: int, timing: MeasureSettings, combine: str = "min",
                     batch: int = 0, lock_path: str | None = None, progress: bool = False, timer: Callable[..., Timing] = time_model) -> list[Case]:
    """Realise and time every (spec, policy) in order, ``batch`` at a time (0: all, then time them all); ``timer``
    (:func:`time_model`'s signature) times each file: here, or on a device's Ray node (:mod:`hwsearch.runtime.remote`)."""
    from tqdm import tqdm

    check_combine(combine)
    if batch < 0:
        raise HwsearchError(f"batch={batch} must be 0 (all models at once) or more (models realised before each batch is timed).")
    feed = jobs[0][0].ctx.task.latency_feed() if jobs else None
    size = batch or len(jobs) or 1
    cases: list[Case] = []
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=len(jobs), desc="realise + time", unit="model", disable=not progress) as bar:
        for first in range(0, len(jobs), size):
            built = []
            for i, (spec, policy) in enumerate(jobs[first:first + size], first):
                built.append(realise_case(spec, policy, Path(tmp) / f"{spec.name.replace(':', '_')}-{i}.onnx"))
            os.sync()  # the kernel writes the new files back now, not during the timing
            with measuring(lock_path):
                cases += measure_cases(built, settings, rounds, timing, feed, combine, timer)
            for b in built:
                b.path.unlink(missing_ok=True)
            bar.update(len(built))
    return cases


COMBINE = {"min": min, "median": statistics.median}  # how a model's timing rounds make its measured latency


def check_combine(combine: str) -> None:
    if combine not in COMBINE:
        raise HwsearchError(f"combine={combine!r} is unknown; use one of {', '.join(COMBINE)}.")


def repeat_error(values: Sequence[float], combine: str = "median") -> float | None:
    """One timing session's half against the other: ``combine`` of the even sessions / of the odd
    ones - 1 (None with fewer than two). The measurement's own spread, beside the prediction's error."""
    return COMBINE[combine](values[0::2]) / COMBINE[combine](values[1::2]) - 1.0 if len(values) > 1 else None


def measure_cases(built: Sequence[Built], settings: SessionSettings, rounds: int, timing: MeasureSettings, feed: dict | None = None, combine: str = "min",
                  timer: Callable[..., Timing] = time_model) -> list[Case]:
    """Time every built model ``rounds`` times, interleaved, so that background load spreads evenly;
    ``measured_ms`` combines the rounds' ``timing.statistic`` (the table's statistic) by ``combine``
    (``min``: the fastest round; ``median``). With two or more rounds, ``repeat_error`` compares the
    even rounds with the odd ones, combined the same way: how far two measurements of the same file
    disagree (the noise floor of the validation)."""
    check_combine(combine)
    per: list[list[tuple[float, float]]] = [[] for _ in built]
    for _ in range(rounds):
        for i, b in enumerate(built):
            t = timer(b.path, settings, timing, feed)
            per[i].append((t.value(timing.statistic), t.p90_us))
    cases = []
    for b, runs in zip(built, per):
        values = [m for m, _ in runs]
        p90 = statistics.median(p for _, p in runs) / 1e3
        cases.append(Case(b.model, b.policy.to_dict(), b.predicted_ms, COMBINE[combine](values) / 1e3, p90, b.coverage, repeat_error(values, combine),
                          statistics.median(values) / 1e3))
    return cases


def repeatability_summary(cases: Sequence[Case], combine: str = "median") -> dict[str, Any] | None:
    """How closely the timing passes of the same files agree (None with fewer than two passes)."""
    rep = [c.repeat_error for c in cases if c.repeat_error is not None]
    return {**figures(rep), "what": f"measured vs measured: {combine} of the even timing rounds / {combine} of the odd rounds - 1, same ONNX file"} if rep else None


def figures(errs: Sequence[float]) -> dict[str, Any]:
    """n_models, rmspe, within_5pct and within_10pct of relative errors."""
    return {"n_models": len(errs), "rmspe": _rms(errs), "within_5pct": _within(errs, 0.05), "within_10pct": _within(errs, 0.10)}


def loadavg() -> float | None:
    """1-minute load average (other work on the cores makes timings noisy; recorded beside them)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) CPU time in clock ticks since boot, from /proc/stat (None where unreadable)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_since(before: tuple[int, int] | None) -> float | None:
    """Fraction of the CPU time since ``before`` (a :func:`cpu_times` reading) that the hypervisor
    gave to other guests ("steal"): on a VM, the share of the run in which a vCPU was not running at all."""
    after = cpu_times() if before is not None else None
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def noise_warnings(report: dict[str, Any]) -> list[str]:
    """What in a validation report says the machine was disturbed while it was measured (the figures
    then describe the disturbance more than the table), each with the fix."""
    out = []
    rep, drift = report.get("repeatability"), report.get("drift")
    if rep and rep["n_models"] >= 5 and rep["within_10pct"] < 0.9:
        out.append(f"timing passes of the same files disagreed by more than 10% for {1 - rep['within_10pct']:.0%} of models "
                   f"(cpu_steal {report.get('cpu_steal') or 0:.1%}): other work or the hypervisor took the cores; measure again on an idle machine")
    if drift and drift["n_models"] >= 5 and abs(drift["mean_change"]) > 0.10:
        out.append(f"the calibration's models now time {drift['mean_change']:+.0%} against their timing at {drift.get('calibrated_at')}: "
                   "the machine's speed changed since calibrating; calibrate and validate again on an idle machine")
    return out


def _rms(errs: Sequence[float]) -> float:
    return (sum(e * e for e in errs) / len(errs)) ** 0.5 if errs else 0.0


def _within(errs: Sequence[float], tol: float) -> float:
    return sum(abs(e) <= tol for e in errs) / len(errs) if errs else 0.0



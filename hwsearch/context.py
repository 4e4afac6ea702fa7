"""The Context: everything a policy is realised and predicted against, built once.

A :class:`Context` holds the task (data + metric), the model family (mechanics), the baseline, the
search space, the compression options and the target devices; :meth:`Context.predictors` loads
one latency predictor per device on first use. The search driver, each search worker, export,
the latency commands and ``hwsearch compress`` build it the same way (:func:`from_config`,
:func:`build`), so a worker that receives the config as plain data rebuilds exactly the driver's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hwsearch.config import DeviceSpec, ExperimentConfig
from hwsearch.errors import HwsearchError
from hwsearch.families import Baseline, ModelFamily, family_for
from hwsearch.imports import import_object
from hwsearch.options import CompressOptions, TrainConfig
from hwsearch.space import SearchSpace
from hwsearch.tasks import Task, get_task

# ``module:function`` replacing the table predictor (signature of hwsearch.latency.predict.load_predictor)
PREDICTOR_ENV = "HWSEARCH_PREDICTOR"
log = logging.getLogger("hwsearch.context")


@dataclass(frozen=True)
class Context:
    task: Task
    family: ModelFamily
    baseline: Baseline
    space: SearchSpace
    options: CompressOptions = CompressOptions()
    devices: tuple[DeviceSpec, ...] = ()
    _predictors: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def predictor(self, table_dir: str, strict: bool = False, calibrated: bool = True, adapt: str | None = None):
        """The latency predictor of this model's policies from the table at ``table_dir`` (with this
        machine's adaptation under ``adapt``: ``auto``/``off``/``require``, default ``$HWSEARCH_ADAPT`` or auto)."""
        from hwsearch.latency.predict import load_predictor

        factory = import_object(os.environ[PREDICTOR_ENV], "Latency predictor") if os.environ.get(PREDICTOR_ENV) else load_predictor
        return factory(table_dir, self.family, self.baseline.model, self.task, self.space, strict=strict, calibrated=calibrated, adapt=adapt)

    def predictors(self) -> dict[str, Any]:
        """One predictor per configured device, keyed by device name (loaded once)."""
        if not self._predictors:
            self._predictors.update({d.name: self.predictor(d.table, adapt=d.adapt) for d in self.devices})
        return self._predictors

    def with_options(self, **changes: Any) -> Context:
        return dataclasses.replace(self, options=dataclasses.replace(self.options, **changes), _predictors={})


def task_and_family(task_name: str, task_options: Mapping[str, Any], model: str | None) -> tuple[Task, ModelFamily, str]:
    """The task, the model (the task's default when None) and its family, checked to fit together."""
    task = get_task(task_name, **dict(task_options))
    model = model or task.default_model
    family = family_for(model)
    if family.name not in task.families:
        raise HwsearchError(f"Model {model!r} is unknown for task {task.name!r}; use {task.default_model!r} (task {task.name!r} takes {', '.join(task.families)} models).")
    return task, family, model


def build(task_name: str, model: str | None = None, *, task_options: Mapping[str, Any] | None = None, model_options: Mapping[str, Any] | None = None,
          train: Mapping[str, Any] | None = None, keep_choices: Sequence[float] | None = None, precisions: Sequence[str] | None = None,
          channel_multiple: int | None = None, options: CompressOptions = CompressOptions(), devices: Sequence[DeviceSpec] = (),
          random_init: bool = False, retrain: bool = False, verbose: bool = False, quant_choices: Mapping[str, Sequence[Any]] | None = None) -> Context:
    """A Context from plain arguments; ``random_init`` uses an untrained model (latency does not depend on weights)."""
    task, family, model = task_and_family(task_name, task_options or {}, model)
    opts = dict(model_options or {})
    if random_init:
        base = family.build_model(model, task, opts).eval()
        baseline = Baseline(base, model, opts, None, float("nan"), float("nan"))  # type: ignore[arg-type]
    else:
        cfg = TrainConfig(**{**dataclasses.asdict(task.train_config), **dict(train or {})})
        baseline = family.load_baseline(task, model, opts, cfg, retrain=retrain, verbose=verbose)
    space = family.search_space(baseline.model, task, keep_choices, precisions, channel_multiple)
    if quant_choices:
        space = space.with_quant_choices(quant_choices)
    return Context(task, family, baseline, space, options, tuple(devices))


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the defaults that depend on the task and model family filled in (the model, the
    space's channel multiple, the fine-tune learning rate), as a run directory's config.json records them."""
    if not cfg.model:
        cfg = dataclasses.replace(cfg, model=get_task(cfg.task, **dict(cfg.task_options)).default_model)
    family = family_for(cfg.model)
    if cfg.space.channel_multiple is None:
        cfg = dataclasses.replace(cfg, space=dataclasses.replace(cfg.space, channel_multiple=family.default_channel_multiple))
    if cfg.compress.finetune_lr is None:
        cfg = dataclasses.replace(cfg, compress=dataclasses.replace(cfg.compress, finetune_lr=family.default_finetune_lr))
    return cfg


def from_config(cfg: ExperimentConfig, verbose: bool = False, random_init: bool = False) -> Context:
    """The Context of an experiment: the baseline is trained and cached if absent (``random_init``:
    untrained weights instead, for what needs only the model's shapes)."""
    return build(cfg.task, cfg.model, task_options=cfg.task_options, model_options=cfg.model_options, train=cfg.baseline,
                 keep_choices=cfg.space.keep_choices, precisions=cfg.space.precisions, channel_multiple=cfg.space.channel_multiple,
                 options=dataclasses.replace(cfg.compress, eval_split="val"), devices=cfg.devices, random_init=random_init, verbose=verbose,
                 quant_choices=dict(cfg.space.quant))


def reference_specs(table_dir: str) -> list[Any]:
    """One latency Spec per reference model of the table at ``table_dir`` (its reference.json, else
    the models its meta.json lists), with untrained weights and the table's unadapted predictor."""
    from hwsearch.latency.cases import Spec
    from hwsearch.tables import reference
    from hwsearch.tables.table import load_table

    ref = reference.load(table_dir)
    if ref is not None:
        pairs = list(dict.fromkeys((m["task"], m["model"], json.dumps(m.get("model_options") or {}, sort_keys=True), json.dumps(m.get("task_options") or {}, sort_keys=True))
                                   for m in ref["models"]))
    else:
        listed = [str(m) for m in load_table(table_dir, warn_provenance=False).meta.get("models") or []]
        pairs = [(*m.split("/", 1), "{}", "{}") for m in listed if "/" in m]
        if not pairs:
            raise HwsearchError(f"Latency table {table_dir!r} has no reference.json and its meta.json names no task/model pairs, so it cannot be checked here; "
                                f"run `hwsearch calibrate-table {table_dir} --model ...` to give it reference models.")
    out = []
    for task, model, options, task_options in pairs:
        ctx = build(task, model, task_options=json.loads(task_options), model_options=json.loads(options), random_init=True)
        with warnings.catch_warnings():  # "measured on another CPU": what the check is about to measure
            warnings.filterwarnings("ignore", message="Latency table .* was measured with")
            out.append(Spec(ctx.baseline.model_spec, ctx, ctx.predictor(table_dir, adapt="off")))
    return out


def ensure_adaptation(device: DeviceSpec, progress: bool = True, ray_address: str = "") -> dict[str, Any]:
    """Before predicting for ``device`` on this machine: under ``auto``, check its table here and store
    an adaptation when none matches this machine (``hwsearch check-table --adapt``, about a minute);
    under ``require``, fail unless one matches; under ``off``, do nothing. Returns what was used.
    A device with ``ray_resources`` has its reference models timed on the node of the Ray cluster at
    ``ray_address`` that has them (:mod:`hwsearch.runtime.remote`); they are realised here."""
    from functools import partial

    from hwsearch.latency.cases import measure_policies
    from hwsearch.latency.check import check_table
    from hwsearch.latency.predict import machine_adaptation
    from hwsearch.runtime.remote import Router
    from hwsearch.tables import adaptation as adapt_files
    from hwsearch.tables.calibration import load_calibration
    from hwsearch.tables.table import load_table

    mode = adapt_files.default_mode(device.adapt)
    if mode == "off":
        return {"mode": mode, "adaptation": None}
    table = load_table(device.table, warn_provenance=False)
    try:  # the predictors' own rule: the same calibration notion, the same match, the same refusal under "require"
        found = machine_adaptation(table, load_calibration(table.path) is not None, mode)
    except HwsearchError as exc:
        raise HwsearchError(f"Device {device.name!r}: {exc}") from None
    if found is not None:
        return {"mode": mode, "adaptation": found.key, "created": found.info.get("created"), "fit": found.info.get("fit")}
    _say(f"[{device.name}] no adaptation of {device.table} for this machine: checking the table here (hwsearch check-table --adapt)", progress)
    router = Router(device.name, device.ray_resources, ray_address) if device.ray_resources else None
    try:
        report = check_table(device.table, reference_specs(device.table), adapt=True, progress=progress,
                             **({"measure": partial(measure_policies, timer=router)} if router else {}))
    except HwsearchError as exc:
        warnings.warn(f"Device {device.name!r}: the table could not be checked on this machine ({exc}); predicting with the table as built.", stacklevel=2)
        return {"mode": mode, "adaptation": None, "error": str(exc)}
    finally:
        if router:
            router.close()
    _say(f"[{device.name}] {report['verdict']}", progress)
    keep = ("offset", "by_family", "before", "after_leave_one_out", "repeatability", "verdict", "seconds", "machine")
    return {"mode": mode, "adaptation": report["adaptation"]["key"], "check": {k: report[k] for k in keep}} | ({"measured_on": router.where()} if router else {})


def _say(message: str, progress: bool) -> None:
    """A progress line: on stderr when ``progress``, and to the ``hwsearch`` loggers (a run's search.log) always."""
    if progress:
        print(message, file=sys.stderr)
    log.info(message)

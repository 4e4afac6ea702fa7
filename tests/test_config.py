"""Experiment config: defaults, overrides, and errors that name the key, the value and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwsearch.config import apply_overrides, load_config, parse_value
from hwsearch.context import resolve
from hwsearch.errors import HwsearchError
from tests.search_helpers import make_table, write_config


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    return write_config(tmp_path, "exp", budget_ms=0.5)


def test_defaults_and_resolution(cfg_path: Path, tmp_path: Path) -> None:
    raw = load_config(cfg_path)
    assert raw.model == "" and raw.space.channel_multiple is None  # the task's / the model family's, filled in by resolve
    cfg = resolve(raw)
    assert cfg.name == "exp" and cfg.sampler == "nsga2" and cfg.task == "digits" and cfg.model == "resnet20"
    assert cfg.space.channel_multiple == 8 and resolve(cfg) == cfg
    assert cfg.device_names == ("cpu-1t",) and cfg.budgets == {"cpu-1t": 0.5}
    assert Path(cfg.devices[0].table).is_absolute() and (Path(cfg.devices[0].table) / "table.csv").is_file()
    assert cfg.objective_names == ("accuracy", "latency_ms:cpu-1t") and cfg.directions == ("maximize", "minimize")
    assert cfg.compress.finetune_steps == 0 and cfg.space.keep_choices == (0.25, 0.5, 0.75, 1.0)


def test_output_dir_defaults_to_runs_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_table(tmp_path / "latency_tables" / "cpu-1t")
    (tmp_path / "quick.toml").write_text('[devices.cpu-1t]\ntable = "latency_tables/cpu-1t"\n')
    cfg = load_config(tmp_path / "quick.toml")
    assert cfg.output_dir == str(tmp_path / "runs" / "quick") and cfg.n_trials == 40 and cfg.workers == 2


def test_set_overrides_any_key(cfg_path: Path) -> None:
    cfg = load_config(cfg_path, ["n_trials=7", "sampler=tpe", "devices.cpu-1t.budget_ms=1.25", "space.keep_choices=[0.5, 1.0]", "objectives=['accuracy','latency_ms','size_bytes']"])
    assert (cfg.n_trials, cfg.sampler, cfg.budgets["cpu-1t"], cfg.space.keep_choices) == (7, "tpe", 1.25, (0.5, 1.0))
    assert cfg.objective_names[-1] == "size_bytes" and cfg.directions[-1] == "minimize"
    assert parse_value("abc") == "abc" and parse_value("3") == 3 and apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_baseline_hflip_is_a_boolean_and_a_saved_unset_one_loads(cfg_path: Path, tmp_path: Path) -> None:
    from dataclasses import asdict

    from hwsearch.config.checks import _baseline
    from hwsearch.options import TrainConfig

    assert load_config(cfg_path, ["baseline.hflip=true"]).baseline["hflip"] is True
    saved = json.loads(json.dumps(asdict(TrainConfig())))  # a run's stored TrainConfig: hflip and steps are None
    assert _baseline(saved) == {k: v for k, v in saved.items() if v is not None}


def test_saved_config_round_trips(cfg_path: Path, tmp_path: Path) -> None:
    cfg = load_config(cfg_path)
    cfg.save(tmp_path / "config.json")
    again = load_config(tmp_path / "config.json")
    assert again == cfg and json.loads((tmp_path / "config.json").read_text())["devices"]["cpu-1t"]["budget_ms"] == 0.5


@pytest.mark.parametrize(
    "override, words",
    [
        ("n_trails=5", ["'n_trails'", "unknown", "n_trials"]),
        ("compress.finetune_step=5", ["compress.'finetune_step'", "finetune_steps"]),
        ("devices.cpu-1t.budget=1", ["budget", "budget_ms"]),
        ("sampler=cmaes", ["'sampler'", "'cmaes'", "nsga2, tpe, random"]),
        ("n_trials=0", ["'n_trials'", "0", "integer >= 1"]),
        ("workers=-1", ["'workers'", "-1", "integer >= 0"]),
        ("devices.cpu-1t.budget_ms=-2", ["budget_ms", "-2", "number > 0"]),
        ("space.precisions=['int4']", ["space.precisions", "int4", "fp32, fp16, int8"]),
        ("objectives=['accuracy']", ["objectives", "latency_ms"]),
        ("compress.importance=magnitude", ["importance", "'magnitude'", "l1"]),
        ("baseline.hflip=1", ["baseline.hflip", "1", "true or false"]),
    ],
)
def test_bad_keys_and_values_name_key_value_and_allowed(cfg_path: Path, override: str, words: list[str]) -> None:
    with pytest.raises(HwsearchError) as err:
        load_config(cfg_path, [override])
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_missing_table_is_an_error_naming_it_and_where_it_looked(cfg_path: Path) -> None:
    with pytest.raises(HwsearchError, match="latency_tables/gpu-x") as err:
        load_config(cfg_path, ["devices.cpu-1t.table=latency_tables/gpu-x"])
    assert str(cfg_path.parent / "latency_tables" / "gpu-x") in str(err.value) and str(Path.cwd() / "latency_tables" / "gpu-x") in str(err.value)
    with pytest.raises(HwsearchError, match=r"builtin:gpu-x is not a built-in latency table"):
        load_config(cfg_path, ["devices.cpu-1t.table=builtin:gpu-x"])
    assert load_config(cfg_path, ["devices.cpu-1t.table=builtin:cpu-2t"]).devices[0].table.endswith("cpu-2t")


def test_missing_devices_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "nodev.toml").write_text("n_trials = 3\n")
    with pytest.raises(HwsearchError, match=r"\[devices"):
        load_config(tmp_path / "nodev.toml")
    with pytest.raises(HwsearchError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "broken.toml").write_text("n_trials = = 3\n")
    with pytest.raises(HwsearchError, match="cannot be parsed"):
        load_config(tmp_path / "broken.toml")


def test_warm_start_defaults_to_available_ratios_and_rejects_others(tmp_path):
    from hwsearch.config import parse_config
    from hwsearch.errors import HwsearchError

    table = tmp_path / "t"
    table.mkdir()
    (table / "table.csv").write_text("key\n")
    raw = {"devices": {"d": {"table": str(table)}}, "space": {"keep_choices": [0.5, 1.0]}}
    assert parse_config(raw, "x", tmp_path).warm_start == (1.0, 0.5)
    with pytest.raises(HwsearchError, match="warm_start value 0.25 is not one of space.keep_choices"):
        parse_config(raw | {"warm_start": [0.25]}, "x", tmp_path)


def test_warm_start_layerwise_takes_precisions_and_keep_ratios_of_the_space(tmp_path):
    from hwsearch.config import parse_config

    table = tmp_path / "t"
    table.mkdir()
    (table / "table.csv").write_text("key\n")
    raw = {"devices": {"d": {"table": str(table)}}, "space": {"keep_choices": [0.5, 1.0], "precisions": ["fp32", "int8"]}}
    cfg = parse_config(raw | {"warm_start_layerwise": ["int8", 0.5]}, "x", tmp_path)
    assert cfg.warm_start_layerwise == ("int8", 0.5) and parse_config(raw, "x", tmp_path).warm_start_layerwise == ()
    saved = json.loads(json.dumps({**raw, "warm_start_layerwise": list(cfg.warm_start_layerwise)}))  # config.json round trip (resume)
    assert parse_config(saved, "x", tmp_path).warm_start_layerwise == cfg.warm_start_layerwise
    with pytest.raises(HwsearchError, match=r"warm_start_layerwise\[1\] = 'fp16' is neither a precision in space.precisions \['fp32', 'int8'\]"):
        parse_config(raw | {"warm_start_layerwise": ["int8", "fp16"]}, "x", tmp_path)
    with pytest.raises(HwsearchError, match=r"warm_start_layerwise\[0\] = 0.25 .* keep ratio in space.keep_choices \[0.5, 1.0\]"):
        parse_config(raw | {"warm_start_layerwise": [0.25]}, "x", tmp_path)
    with pytest.raises(HwsearchError, match="warm_start_layerwise='int8' is not a list"):
        parse_config(raw | {"warm_start_layerwise": "int8"}, "x", tmp_path)


def test_warm_start_policies_load_files_and_inline_tables_with_clear_errors(tmp_path):
    from hwsearch.config import parse_config

    table = tmp_path / "t"
    table.mkdir()
    (table / "table.csv").write_text("key\n")
    (tmp_path / "mix.json").write_text(json.dumps({"default_keep": 0.5, "precision": {"fc": "int8"}}))
    raw = {"devices": {"d": {"table": str(table)}}, "warm_start_policies": ["mix.json", {"default_precision": "int8"}]}
    cfg = parse_config(raw, "x", tmp_path)  # relative paths resolve against the config's folder too
    assert [p["default_keep"] for p in cfg.warm_start_policies] == [0.5, 1.0]
    assert cfg.warm_start_policies[0]["precision"] == {"fc": "int8"} and cfg.warm_start_policies[1]["default_precision"] == "int8"
    assert parse_config(json.loads(json.dumps(raw | {"warm_start_policies": list(cfg.warm_start_policies)})), "x", tmp_path).warm_start_policies == cfg.warm_start_policies
    with pytest.raises(HwsearchError, match=r"warm_start_policies\[0\] names 'nope.json', which is not a file"):
        parse_config(raw | {"warm_start_policies": ["nope.json"]}, "x", tmp_path)
    with pytest.raises(HwsearchError, match=r"warm_start_policies\[0\]: Policy key 'keeep' is unknown"):
        parse_config(raw | {"warm_start_policies": [{"keeep": {}}]}, "x", tmp_path)


def test_space_quant_makes_recipe_settings_search_dimensions_and_round_trips(tmp_path: Path) -> None:
    from hwsearch.config import parse_config

    path = write_config(tmp_path, space={"keep_choices": [0.5, 1.0], "precisions": ["fp32", "int8"]})
    path.write_text(path.read_text() + '[space.quant]\ncalibration = ["minmax", "percentile"]\ncalib_samples = [32, 64]\n')
    cfg = load_config(path, [])
    assert cfg.space.quant == (("calibration", ("minmax", "percentile")), ("calib_samples", (32, 64)))
    saved = json.loads(json.dumps(cfg.to_dict()))
    assert saved["space"]["quant"] == {"calibration": ["minmax", "percentile"], "calib_samples": [32, 64]}
    assert parse_config(saved, cfg.name, tmp_path).space.quant == cfg.space.quant
    assert "quant" not in load_config(write_config(tmp_path / "plain"), []).to_dict()["space"]  # unchanged identity of runs that search no recipe
    for body, words in [('activation_type = ["uint8", "int8"]', ["S8S8", "U8S8 kernels only", "--baseline ort-default"]),
                        ('calibraton = ["minmax"]', ["calibraton", "calibration"]), ('calibration = "minmax"', ["space.quant.calibration", "non-empty list"]),
                        ('calibration = ["minmax", "kl"]', ["'kl'"])]:
        path.write_text(path.read_text().split("[space.quant]")[0] + f"[space.quant]\n{body}\n")
        with pytest.raises(HwsearchError) as err:
            load_config(path, [])
        assert all(w in str(err.value) for w in words) and "\n" not in str(err.value), (body, str(err.value))


def test_space_quant_reaches_the_search_space(tmp_path: Path, tiny_resnet) -> None:
    from hwsearch import context

    path = write_config(tmp_path, space={"keep_choices": [0.5, 1.0], "precisions": ["fp32", "int8"]})
    path.write_text(path.read_text() + '[space.quant]\ncalibration = ["minmax", "entropy"]\n')
    ctx = context.from_config(resolve(load_config(path, [])), random_init=True)
    assert ctx.space.quant_choices == (("calibration", ("minmax", "entropy")),)

"""Built-in tables and configs (package data): ``builtin:NAME`` from anywhere, the resolution order of a
config's table path, ``hwsearch tables``, ``hwsearch init``, close-match suggestions, and the
adaptation folder of an installed (packaged) table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwsearch.cli import main
from hwsearch.config import builtin as bi
from hwsearch.config import load_config
from hwsearch.errors import HwsearchError
from tests.search_helpers import make_table

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("cpu-1t", "cpu-2t", "minilm-cpu-1t", "minilm-cpu-2t")


def test_every_shipped_table_and_config_is_a_builtin_from_the_repository_sources():
    assert set(SHIPPED) <= set(bi.table_names()) and {"quickstart", "minilm_cpu"} <= set(bi.config_names())
    for name in bi.table_names():  # the package's data is the repository's latency_tables/ (one source)
        assert bi.resolve_table(f"builtin:{name}") == (ROOT / "latency_tables" / name).resolve()
        assert bi.display_name(ROOT / "latency_tables" / name) == f"builtin:{name}"
    assert bi.builtin_config("quickstart").read_text() == (ROOT / "experiments" / "quickstart.toml").read_text()
    assert not bi.is_packaged(ROOT / "latency_tables" / "cpu-1t")  # a checkout writes adaptations beside the table (git-ignored)


def test_builtin_names_work_from_any_directory_and_bad_ones_suggest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (bi.resolve_table("builtin:cpu-1t") / "table.csv").is_file()
    with pytest.raises(HwsearchError, match=r"builtin:cpu1t is not a built-in latency table \(did you mean 'builtin:cpu-1t'\?\).*builtin:minilm-cpu-2t"):
        bi.resolve_table("builtin:cpu1t")
    with pytest.raises(HwsearchError, match=r"did you mean 'builtin:quickstart'"):
        load_config("builtin:quikstart")
    cfg = load_config("builtin:quickstart")
    assert cfg.devices[0].table == str((ROOT / "latency_tables" / "cpu-1t").resolve()) and cfg.output_dir == str(tmp_path / "runs" / "quickstart")


@pytest.mark.parametrize("config", ["quickstart.toml", "minilm_cpu.toml", "imagenet_lite0.toml"])
def test_shipped_configs_load_by_absolute_path_from_another_directory(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "experiments" / config)
    assert all((Path(d.table) / "table.csv").is_file() for d in cfg.devices)
    assert cfg.output_dir.startswith(str(tmp_path))


def test_relative_table_resolves_config_folder_then_cwd_then_builtins(tmp_path, monkeypatch):
    conf, work = tmp_path / "conf", tmp_path / "work"
    conf.mkdir(), work.mkdir()
    monkeypatch.chdir(work)
    cfg_file = conf / "exp.toml"
    cfg_file.write_text('[devices.cpu-1t]\ntable = "latency_tables/cpu-1t"\n')
    assert load_config(cfg_file).devices[0].table == str((ROOT / "latency_tables" / "cpu-1t").resolve())  # neither folder has it: the built-in
    make_table(work / "latency_tables" / "cpu-1t")
    assert load_config(cfg_file).devices[0].table == str((work / "latency_tables" / "cpu-1t").resolve())  # the working directory's
    make_table(conf / "latency_tables" / "cpu-1t")
    assert load_config(cfg_file).devices[0].table == str((conf / "latency_tables" / "cpu-1t").resolve())  # the config's folder first
    cfg_file.write_text('[devices.edge]\ntable = "tables/edge"\n')
    with pytest.raises(HwsearchError) as err:
        load_config(cfg_file)
    msg = str(err.value)
    assert "'devices.edge.table'" in msg and str(conf / "tables" / "edge") in msg and str(work / "tables" / "edge") in msg and "builtin:cpu-1t" in msg and "\n" not in msg


def test_unknown_config_and_set_keys_suggest_the_close_match(tmp_path):
    cfg_file = tmp_path / "exp.toml"
    cfg_file.write_text('n_trails = 4\n[devices.cpu-1t]\ntable = "builtin:cpu-1t"\n')
    with pytest.raises(HwsearchError, match=r"'n_trails' is unknown \(did you mean 'n_trials'\?\)"):
        load_config(cfg_file)
    cfg_file.write_text('[devices.cpu-1t]\ntable = "builtin:cpu-1t"\n')
    with pytest.raises(HwsearchError, match=r"'finetune_step' is unknown \(did you mean 'finetune_steps'\?\)"):
        load_config(cfg_file, ["compress.finetune_step=3"])
    with pytest.raises(HwsearchError, match=r"'budget' is unknown \(did you mean 'budget_ms'\?\)"):
        load_config(cfg_file, ["devices.cpu-1t.budget=1"])


def test_typo_command_is_one_line_with_a_suggestion(capsys):
    assert main(["serch", "x.toml"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'serch' is not a command (did you mean 'search'?)" in err and "\n" not in err
    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0 and capsys.readouterr().out.strip().startswith("hwsearch ")


def test_python_dash_m_hwsearch_runs_the_cli(tmp_path):
    from hwsearch import __version__

    out = subprocess.run([sys.executable, "-m", "hwsearch", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"hwsearch {__version__}"


def test_tables_lists_every_builtin_with_its_figures(capsys):
    assert main(["tables", "--json"]) == 0
    rows = {r["table"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {f"builtin:{n}" for n in SHIPPED}
    one = rows["builtin:cpu-1t"]
    meta = json.loads((ROOT / "latency_tables" / "cpu-1t" / "meta.json").read_text())
    val = json.loads((ROOT / "latency_tables" / "cpu-1t" / "validation.json").read_text())
    assert (one["threads"], one["runtime_version"], one["cpu_model"], one["rows"]) == (1, meta["runtime_version"], meta["cpu_model"], meta["table_rows"])
    assert (one["validated_models"], one["within_10pct"], one["coverage"]) == (val["n_models"], val["within_10pct"], val["mean_coverage"])
    assert rows["builtin:minilm-cpu-2t"]["threads"] == 2 and rows["builtin:minilm-cpu-2t"]["models"] == ["minilm/all-minilm-l6-v2"]
    assert main(["tables"]) == 0
    text = capsys.readouterr().out
    assert all(f"builtin:{n}" in text for n in SHIPPED) and "within ±10%" in text


def test_init_writes_a_ready_config_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "quick", "--table", "builtin:cpu-2t", "--model", "vgg"]) == 0
    cfg = load_config(tmp_path / "quick.toml")
    assert (cfg.name, cfg.model, cfg.device_names, cfg.output_dir) == ("quick", "vgg", ("cpu-2t",), str(tmp_path / "runs" / "quick"))
    assert cfg.devices[0].table == str((ROOT / "latency_tables" / "cpu-2t").resolve()) and cfg.n_trials <= 40
    assert "hwsearch search quick.toml" in capsys.readouterr().out
    before = (tmp_path / "quick.toml").read_text()
    assert main(["init", "quick"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err and (tmp_path / "quick.toml").read_text() == before
    assert main(["init", "quick", "--force", "--task", "minilm"]) == 0
    cfg = load_config(tmp_path / "quick.toml")
    assert cfg.task == "minilm" and cfg.device_names == ("minilm-cpu-1t",) and cfg.compress.finetune_steps == 0


@pytest.mark.parametrize("argv, words", [
    (["init", "q", "--table", "builtin:cpu1t"], ["builtin:cpu1t", "did you mean 'builtin:cpu-1t'"]),
    (["init", "q", "--table", "nowhere/t"], ["'nowhere/t'", "no table.csv in", "builtin:cpu-1t"]),
    (["init", "q", "--task", "digit"], ["--task 'digit' is unknown", "did you mean 'digits'"]),
    (["init", "q", "--model", "resnet2"], ["--model 'resnet2' is unknown", "did you mean 'resnet20'"]),
    (["init", "q", "--task", "minilm", "--table", "builtin:cpu-1t"], ["cannot time minilm", "builtin:minilm-cpu-1t"]),
    (["init", ".hidden"], ["not a safe run name"]),
])
def test_init_bad_arguments_are_one_line_and_write_nothing(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert all(w in err for w in words) and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_packaged_table_adaptations_go_to_the_user_cache(tmp_path, monkeypatch):
    from hwsearch.tables import adaptation

    monkeypatch.setenv("HWSEARCH_CACHE", str(tmp_path / "cache"))
    installed = tmp_path / "site" / "hwsearch"
    make_table(installed / "data" / "latency_tables" / "cpu-1t")
    monkeypatch.setattr(bi, "PACKAGE", installed.resolve())  # as in a wheel: the table inside the package
    folders = adaptation.folders(installed / "data" / "latency_tables" / "cpu-1t")
    assert len(folders) == 1 and folders[0].is_relative_to(tmp_path / "cache" / "adaptations")
    mine = tmp_path / "mine"
    make_table(mine)
    assert adaptation.folders(mine)[0] == mine / "adaptations"  # the user's own table: beside it, as before


def test_predict_with_a_bad_table_fails_fast_without_training(tmp_path):
    """Latency commands check their arguments before any work: a bad --table is a one-line error in
    under 5 s (the whole process, imports included), and nothing is trained or cached."""
    (tmp_path / "p.json").write_text('{"default_keep": 0.5}')
    env = {**os.environ, "HWSEARCH_CACHE": str(tmp_path / "cache")}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hwsearch", "predict", "--table", "does/not/exist", "--policy", "p.json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    assert out.returncode == 2 and "does/not/exist" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert took < 5.0, took
    assert not (tmp_path / "cache").exists()

"""Bad inputs a careless user or an attacker gives: each is one line on stderr naming the bad value
and the fix, exit status 2, and nothing on disk changed; data files never run code."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hwsearch.cli import main
from hwsearch.errors import HwsearchError
from hwsearch.tables.table import COLUMNS, load_table, table_hash
from tests.search_helpers import make_table, write_config

REPO = Path(__file__).resolve().parents[1]


def _fails(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI: exit 2 and exactly one stderr line holding every needle."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("hwsearch: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


# --- latency tables: checked whole on load -------------------------------------------------------

def _cut(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:-n])


def _legacy(table: Path) -> None:
    """A table written before meta.json recorded table_rows / table_sha256."""
    meta = json.loads((table / "meta.json").read_text())
    meta.pop("table_rows"), meta.pop("table_sha256")
    (table / "meta.json").write_text(json.dumps(meta))


def test_written_tables_record_rows_and_hash(tmp_path):
    table = make_table(tmp_path / "cpu-1t")
    meta = json.loads((table / "meta.json").read_text())
    with (table / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert meta["table_rows"] == len(rows) > 10 and meta["table_sha256"] == table_hash(table)
    assert len(load_table(table, warn_provenance=False).us) == len(rows)


@pytest.mark.parametrize("n", [1, 6, 40])
def test_cut_table_csv_is_refused_naming_the_file(tmp_path, n):
    table = make_table(tmp_path / "cpu-1t")
    _cut(table / "table.csv", n)  # 6: inside the last row's numbers, which used to load silently
    with pytest.raises(HwsearchError, match="re-profile") as err:
        load_table(table, warn_provenance=False)
    assert str(table / "table.csv") in str(err.value) and "\n" not in str(err.value)


def test_legacy_table_without_the_fields_is_parsed_strictly(tmp_path):
    table = make_table(tmp_path / "cpu-1t")
    _legacy(table)
    assert load_table(table, warn_provenance=False).us  # whole legacy tables still load
    text = (table / "table.csv").read_text()
    lines = text.splitlines()
    (table / "table.csv").write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")  # last row cut in half
    with pytest.raises(HwsearchError, match=rf"row {len(lines)} .*has \d+ of {len(COLUMNS)} columns.*re-profile"):
        load_table(table, warn_provenance=False)
    bad = lines[-1].split(",")
    bad[COLUMNS.index("median_us")] = "1.2.3"
    (table / "table.csv").write_text("\n".join(lines[:-1] + [",".join(bad)]) + "\n")
    with pytest.raises(HwsearchError, match=r"median_us='1.2.3', which is not a number.*re-profile"):
        load_table(table, warn_provenance=False)


def test_meta_json_that_is_not_json_is_one_line(tmp_path, capsys, tiny_resnet):
    cfg = write_config(tmp_path)
    table = tmp_path / "tables" / "cpu-1t"
    (table / "meta.json").write_bytes(b'{"schema": 2, "dev')
    _fails(capsys, ["search", str(cfg), "--quiet"], str(table / "meta.json"), "not valid JSON", "re-profile")
    (table / "meta.json").write_bytes(bytes(range(256)))
    _fails(capsys, ["search", str(cfg), "--quiet", "--set", "workers=2"], str(table / "meta.json"), "re-profile")
    assert not (tmp_path / "runs" / "exp" / "config.json").exists()  # a failed start pins nothing


def test_truncated_table_csv_stops_the_search_before_any_trial(tmp_path, capsys, tiny_resnet):
    cfg = write_config(tmp_path)
    _cut(tmp_path / "tables" / "cpu-1t" / "table.csv", 6)
    _fails(capsys, ["search", str(cfg), "--quiet"], "table.csv", "re-profile")
    assert not (tmp_path / "runs" / "exp" / "study.db").exists()


def test_worker_start_failure_is_one_clean_line(tmp_path, tiny_resnet):
    """Ray hands back a worker's start-up error as a long traceback: the driver keeps its last line."""
    from hwsearch.config import load_config
    from hwsearch.context import resolve
    from hwsearch.search.executors import RayExecutor

    cfg = resolve(load_config(write_config(tmp_path)))
    (tmp_path / "tables" / "cpu-1t" / "meta.json").write_text("not json")
    with pytest.raises(HwsearchError) as err:
        RayExecutor(cfg.to_dict(), 1)
    text = str(err.value)
    assert "\n" not in text and "meta.json" in text and "not valid JSON" in text and "Traceback" not in text, text


def test_shipped_tables_record_their_rows_and_hash():
    for table in sorted((REPO / "latency_tables").iterdir()):
        meta = json.loads((table / "meta.json").read_text())
        with (table / "table.csv").open() as f:
            n = sum(1 for _ in csv.DictReader(f))
        assert meta["table_rows"] == n and meta["table_sha256"] == table_hash(table), table
        cal = json.loads((table / "calibration.json").read_text())
        assert cal["table_sha256"] == table_hash(table), table  # table.csv itself untouched
        assert len(load_table(table, warn_provenance=False).us) == n


# --- run directories --------------------------------------------------------------------------

def test_corrupted_study_db_is_one_line_and_left_alone(tmp_path, capsys):
    import optuna

    cfg = write_config(tmp_path)
    run = tmp_path / "runs" / "exp"
    run.mkdir(parents=True)
    (run / "study.db").write_bytes(b"this is not a database" * 200)
    before = (run / "study.db").read_bytes()
    _fails(capsys, ["search", str(cfg), "--quiet"], str(run / "study.db"), "not a readable")
    assert (run / "study.db").read_bytes() == before and not (run / "config.json").exists()
    # a real study cut short
    (run / "study.db").unlink()
    study = optuna.create_study(storage=f"sqlite:///{run / 'study.db'}", study_name="exp")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    data = (run / "study.db").read_bytes()
    (run / "study.db").write_bytes(data[: len(data) // 3])
    _fails(capsys, ["search", str(cfg), "--quiet"], str(run / "study.db"), "move it away")
    assert (run / "study.db").read_bytes() == data[: len(data) // 3]


@pytest.mark.parametrize("content", [b"{\"name\": \"exp\", ", bytes(range(256)) * 4, b"[1, 2]"])
def test_corrupted_run_config_json_is_one_line_everywhere(tmp_path, capsys, content):
    cfg = write_config(tmp_path)
    run = tmp_path / "runs" / "exp"
    run.mkdir(parents=True)
    (run / "config.json").write_bytes(content)
    (run / "trials.csv").write_text("number,state\n")
    path = str(run / "config.json")
    _fails(capsys, ["search", str(cfg), "--quiet"], path)
    _fails(capsys, ["export", str(run), "--pareto"], path)
    _fails(capsys, ["dashboard", str(run)], path)
    assert (run / "config.json").read_bytes() == content


def test_binary_policy_file_is_one_line(tmp_path, capsys):
    policy = tmp_path / "p.json"
    policy.write_bytes(b"\x80\x04\x95\xff\xfe" + bytes(range(256)))
    _fails(capsys, ["compress", "--policy", str(policy), "--out", str(tmp_path / "o")], str(policy), "not a JSON text file")
    cfg = write_config(tmp_path, warm_start_policies=[str(policy)])
    _fails(capsys, ["search", str(cfg), "--quiet"], str(policy))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("item", ["=5", " =5", ".=5", "devices..=1"])
def test_set_with_an_empty_key_is_one_line(tmp_path, capsys, item):
    cfg = write_config(tmp_path)
    _fails(capsys, ["search", str(cfg), "--quiet", "--set", item], repr(item), "empty key")


@pytest.mark.parametrize("name", ["../../x", "/abs", ".hidden", "a/b", "", "sp ace", "x" * 200])
def test_unsafe_run_names_are_refused(tmp_path, capsys, name):
    cfg = write_config(tmp_path)
    _fails(capsys, ["search", str(cfg), "--quiet", "--set", f"name={json.dumps(name)}"], repr(name), "letters, digits")
    assert not any(p.name == "x" for p in tmp_path.parent.iterdir())


def test_safe_names_pass(tmp_path):
    from hwsearch.config import load_config

    for name in ("exp", "exp-2.v1_b", "A1"):
        assert load_config(write_config(tmp_path), [f"name={json.dumps(name)}"]).name == name


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_files_are_private_start_failures_pin_nothing_and_resume_rewrites_config_atomically(tmp_path, capsys, tiny_resnet):
    cfg = write_config(tmp_path, n_trials=1)
    run = tmp_path / "runs" / "exp"
    # a start that fails after the run directory was checked (the model factory rejects an option) keeps no config
    _fails(capsys, ["search", str(cfg), "--quiet", "--set", "model_options.bogus=1"], "bogus")
    assert not (run / "config.json").exists()
    assert main(["search", str(cfg), "--quiet"]) == 0, capsys.readouterr().err
    assert _mode(run) == 0o700
    for path in run.rglob("*"):
        if path.is_file():
            assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
    old = json.loads((run / "config.json").read_text())
    assert main(["search", str(cfg), "--quiet", "--set", "n_trials=2"]) == 0
    new = json.loads((run / "config.json").read_text())
    assert old["n_trials"] == 1 and new["n_trials"] == 2 and _mode(run / "config.json") == 0o600
    assert sorted(p.name for p in run.iterdir() if "tmp" in p.name) == []


def test_disk_full_is_one_line_and_keeps_the_run(tmp_path):
    """A real full disk: a 16 KiB tmpfs in a private mount namespace (skipped where unshare is not allowed)."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rm (a private mount namespace) is not allowed here")
    cfg = write_config(tmp_path)
    mnt = tmp_path / "small"
    mnt.mkdir()
    (tmp_path / "cache").mkdir()
    script = textwrap.dedent(f"""
        mount -t tmpfs -o size=16k tmpfs {mnt} || exit 99
        mkdir {mnt}/run && {sys.executable} -m hwsearch search {cfg} --quiet --set output_dir='"{mnt}/run"' 2>{tmp_path}/err1; echo $? > {tmp_path}/rc1
        dd if=/dev/zero of={mnt}/fill bs=1k count=200 2>/dev/null
        cp -a {mnt}/run {tmp_path}/before 2>/dev/null
        {sys.executable} -m hwsearch search {cfg} --quiet --set output_dir='"{mnt}/run"' 2>{tmp_path}/err2; echo $? > {tmp_path}/rc2
        cp -a {mnt}/run {tmp_path}/after
    """)
    env = {**os.environ, "HWSEARCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=170)
    if done.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    for i in (1, 2):
        err = (tmp_path / f"err{i}").read_text().strip()
        assert (tmp_path / f"rc{i}").read_text().strip() == "2", err
        assert len(err.splitlines()) == 1 and "free disk space" in err and str(mnt / "run") in err, err
    assert not [p.name for p in (tmp_path / "after").iterdir() if "tmp" in p.name]
    if (tmp_path / "before" / "config.json").exists():
        assert (tmp_path / "after" / "config.json").read_bytes() == (tmp_path / "before" / "config.json").read_bytes()


# --- code runs only where the docs say so -------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _cifar_batches(root: Path, n: int = 10, protocol: int = 2) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with (root / name).open("wb") as fh:
            pickle.dump(d, fh, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_still_load(tmp_path, protocol):
    from hwsearch.tasks import get_task

    _cifar_batches(tmp_path / "c", protocol=protocol)
    task = get_task("cifar10", data_dir=str(tmp_path / "c"))
    assert task.split("test").x.shape == (10, 3, 32, 32) and len(task.split("train")) + len(task.split("val")) == 50


def test_crafted_cifar_batch_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    _cifar_batches(tmp_path / "c")
    with (tmp_path / "c" / "data_batch_2").open("wb") as fh:
        pickle.dump({b"data": _Payload(marker), b"labels": [1]}, fh, protocol=2)
    _fails(capsys, ["space", "--task", "cifar10", "--data-dir", str(tmp_path / "c")], "data_batch_2", "posix.system" if os.name == "posix" else "system")
    assert not marker.exists()


@pytest.mark.parametrize("spec", ["os:system", "subprocess:run", "builtins:eval", "shutil:rmtree"])
def test_import_paths_to_non_factories_are_refused_before_being_called(tmp_path, capsys, spec):
    marker = tmp_path / "pwned"
    cfg = write_config(tmp_path, task=spec)
    text = cfg.read_text().replace("[model_options]", f"[task_options]\ncommand = \"touch {marker}\"\n[model_options]")
    cfg.write_text(text)
    _fails(capsys, ["search", str(cfg), "--quiet"], repr(spec), "is code")
    _fails(capsys, ["space", "--model", spec], repr(spec))
    assert not marker.exists()


def test_baseline_is_trained_once_by_concurrent_runs(tmp_path):
    """Two processes needing the same uncached baseline: one trains, the other waits and loads it."""
    code = textwrap.dedent("""
        import sys
        from hwsearch.families import get_family
        from hwsearch.options import TrainConfig
        from hwsearch.tasks import get_task
        b = get_family("cnn").load_baseline(get_task("digits"), "vgg", {"cfg": [8, "M", 16]}, TrainConfig(epochs=2, batch_size=64, lr=0.05, seed=7))
        print(b.checkpoint, b.test_accuracy)
    """)
    env = {**os.environ, "HWSEARCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=170) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("training baseline" in err for _, err in outs) == 1, outs
    assert outs[0][0] == outs[1][0]
    left = sorted(p.name for p in (tmp_path / "cache" / "baselines").iterdir())
    assert sum(n.endswith(".pt") for n in left) == 1 and all(n.endswith((".pt", ".lock")) for n in left), left

"""The wheel as a user gets it (issue 19's acceptance test, slow; CI runs it).

Builds the wheel from a copy of the working tree (``pip wheel --no-deps``: offline, no ``build``
package needed), checks it holds every module, the built-in tables and configs and the LICENSE,
installs it NON-editable into a fresh venv and, from an empty directory, runs ``hwsearch --version``,
``hwsearch tables``, ``hwsearch init quick --table builtin:cpu-1t``, ``hwsearch search quick.toml``
(3 trials, in-process, the tests' tiny resnet20 via ``--set``; the table checked and adapted on this
machine as a user's first search does) and ``hwsearch export runs/quick --pareto``.

Why the fresh venv borrows its dependencies: installing torch, Ray, ONNX Runtime and the rest into a
new venv copies about 2 GB and takes minutes on 2 cores (and needs a package index), which would
make this test the slowest of the suite for no extra coverage of hwsearch itself. So the wheel
alone is installed (``--no-deps``) and a ``.pth`` file in the new venv names this interpreter's
site-packages for the third-party packages. A ``.pth`` path entry does not run the ``.pth`` files
of the folder it adds, so the project's editable install (a finder hooked in by such a file) stays
out; the test asserts that ``hwsearch`` is imported from the new venv, so a stray copy of the
project cannot pass for the wheel. What it checks: the wheel's files, its entry point, its package
data, its metadata, and the built-in tables working read-only (nothing is written into the
installed package: adaptations go to ``$HWSEARCH_CACHE``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import site
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.test_export import readme_snippet

ROOT = Path(__file__).resolve().parents[1]
TABLE_FILES = ("table.csv", "meta.json", "calibration.json", "validation.json", "reference.json")


def _source_copy(dst: Path) -> Path:
    """The working tree's packaging inputs (symlinks kept: hwsearch/data points at latency_tables/ and experiments/)."""
    dst.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, dst / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "adaptations", "results", "*.py", "*.sh")
    shutil.copytree(ROOT / "hwsearch", dst / "hwsearch", symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("latency_tables", "experiments"):
        shutil.copytree(ROOT / name, dst / name, ignore=skip)
    return dst


def _build_wheel(tmp: Path) -> Path:
    src, dist = _source_copy(tmp / "src"), tmp / "dist"
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]  # the venv's setuptools: no index needed
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(dist), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = dist.glob("hwsearch-*.whl")
    return wheel


def _check_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "hwsearch").rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel (a package without __init__.py?): {sorted(modules - names)}"
    for table in sorted(p.name for p in (ROOT / "latency_tables").iterdir() if (p / "table.csv").is_file()):
        for f in TABLE_FILES:
            if (ROOT / "latency_tables" / table / f).is_file():
                assert f"hwsearch/data/latency_tables/{table}/{f}" in names
    for config in (ROOT / "experiments").glob("*.toml"):
        assert f"hwsearch/data/experiments/{config.name}" in names
    assert not [n for n in names if "/adaptations/" in n], "machine-local adaptations must stay out of the wheel"
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist_info}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: MIT" in meta and "Requires-Python: >=3.11" in meta
    assert not re.search(r"^Requires-Dist: [^;]*==", meta, re.M), "exact pins belong in constraints.txt, not the package's dependencies"


def _venv_with_wheel(tmp: Path, wheel: Path) -> tuple[Path, Path]:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    here = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()])
    (purelib / "zz_hwsearch_test_deps.pth").write_text("".join(f"{p}\n" for p in here))
    return venv, purelib


def _run(venv: Path, cwd: Path, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "hwsearch"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_a_non_editable_wheel_install_runs_end_to_end_from_an_empty_directory(tmp_path):
    wheel = _build_wheel(tmp_path)
    _check_contents(wheel)
    venv, purelib = _venv_with_wheel(tmp_path, wheel)
    work = tmp_path / "empty"
    work.mkdir()
    # as a user runs it: a fresh cache, and the table checked (and adapted) on this machine before the first trial
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HWSEARCH_ADAPT")}
    env |= {"HWSEARCH_CACHE": str(tmp_path / "cache"), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import hwsearch; print(hwsearch.__file__)"], cwd=work, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(purelib), f"hwsearch was imported from {where}, not from the wheel installed in {purelib}"
    installed = _files(purelib / "hwsearch")

    out = _run(venv, work, env, "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"hwsearch {tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['version']}"
    out = _run(venv, work, env, "tables")
    assert out.returncode == 0 and all(f"builtin:{t}" in out.stdout for t in ("cpu-1t", "cpu-2t", "minilm-cpu-1t", "minilm-cpu-2t")), out.stdout + out.stderr
    out = _run(venv, work, env, "init", "quick", "--table", "builtin:cpu-1t")
    assert out.returncode == 0 and (work / "quick.toml").is_file(), out.stderr

    small = ["n_trials=3", "workers=0", "model_options.widths=[16, 32, 64]", "baseline.epochs=4", "baseline.batch_size=64", "baseline.lr=0.05", "compress.finetune_steps=2"]
    out = _run(venv, work, env, "search", "quick.toml", "--quiet", *(a for kv in small for a in ("--set", kv)))  # the tests' tiny resnet20: trained in seconds
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    run = work / "runs" / "quick"
    assert (run / "config.json").is_file() and (run / "study.db").is_file()
    with sqlite3.connect(run / "study.db") as db:
        states = [s for (s,) in db.execute("SELECT state FROM trials")]
    assert len(states) >= 3 and states.count("COMPLETE") >= 1, states
    assert json.loads((run / "config.json").read_text())["devices"]["cpu-1t"]["table"] == "builtin:cpu-1t"  # survives reinstalling the package
    adapted = json.loads((run / "adaptation.json").read_text())["cpu-1t"]
    assert adapted["mode"] == "auto", adapted
    if adapted["adaptation"]:  # stored for this machine: in $HWSEARCH_CACHE, never beside the installed table
        assert list((tmp_path / "cache" / "adaptations").rglob(f"{adapted['adaptation']}.json")), adapted
    assert "dense fp32" in out.stdout and "Next:" in out.stdout and "hwsearch export" in out.stdout, out.stdout  # the end-of-search summary
    assert (run / "search.log").is_file() and "session started" in (run / "search.log").read_text()

    out = _run(venv, work, env, "export", "runs/quick", "--pareto")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    onnx = sorted((run / "export").rglob("*.onnx"))
    assert onnx, sorted(_files(run))
    index = json.loads((run / "export" / "index.json").read_text())  # the ranked winners, paths relative to export/
    assert index["winners"] and all((run / "export" / w["model"]).is_file() and (run / "export" / w["manifest"]).is_file() for w in index["winners"])
    pick = index["recommended"]["cpu-1t"]
    assert pick is not None and (run / "export" / pick["model"]).is_file(), index
    # the README's loading snippet, verbatim, in the new venv's Python: plain ONNX Runtime reproduces the pick's manifest test score
    snippet = readme_snippet("load")
    assert 'export = "runs/quick/export"' in snippet, "the snippet reads the run `hwsearch init quick` makes"
    got = subprocess.run([str(venv / "bin" / "python"), "-c", snippet], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    score, claimed = map(float, got.stdout.split())
    manifest = json.loads((run / "export" / pick["manifest"]).read_text())
    assert claimed == manifest["scores"][index["score_keys"]["test"]] and score == claimed, (got.stdout, manifest["scores"])
    assert _files(purelib / "hwsearch") == installed, "the search wrote into the installed package (adaptations belong in $HWSEARCH_CACHE)"


def test_pyproject_ranges_constraints_pins_and_python_floor_agree():
    """Ranges in pyproject, exact pins only in constraints.txt (torch==2.13.0: the CPU wheel; any other pulls
    gigabytes), one Python floor for pip and ruff, a LICENSE the metadata names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = project["project"]["dependencies"] + [d for extra in project["project"]["optional-dependencies"].values() for d in extra]
    assert not [d for d in deps if "==" in d], "exact pins belong in constraints.txt"
    assert any(d.startswith("torch>=") for d in project["project"]["dependencies"])
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert pins["torch"] == "2.13.0"
    floor = re.fullmatch(r">=3\.(\d+)", project["project"]["requires-python"]).group(1)
    assert project["tool"]["ruff"]["target-version"] == f"py3{floor}"
    assert project["project"]["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "the hwsearch authors" in (ROOT / "LICENSE").read_text()

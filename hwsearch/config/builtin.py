"""Built-in latency tables and experiment configs, shipped inside the package (``hwsearch/data/``).

``hwsearch/data/latency_tables`` and the files of ``hwsearch/data/experiments`` are symlinks to the
repository's ``latency_tables/`` and ``experiments/*.toml`` (their single source); a wheel holds
copies (pyproject's package-data, without each table's machine-local ``adaptations/``).

``builtin:NAME`` names a built-in table from anywhere (``builtin:cpu-1t``). A relative table path
in a config resolves against the config's folder, then the working directory, then the built-in
tables (``cpu-1t`` or ``latency_tables/cpu-1t`` name the built-in ``cpu-1t`` when neither folder
has it); an error lists every place it looked. An installed built-in table is read-only:
:func:`is_packaged` tells the adaptation code to keep its adaptations in the user cache.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from hwsearch.errors import HwsearchError

PREFIX = "builtin:"
PACKAGE = Path(__file__).resolve().parents[1]  # the hwsearch package folder
DATA = PACKAGE / "data"
TABLES = DATA / "latency_tables"
CONFIGS = DATA / "experiments"


def table_names() -> list[str]:
    """The built-in tables' names (folders with a table.csv), sorted."""
    return sorted(p.parent.name for p in TABLES.glob("*/table.csv")) if TABLES.is_dir() else []


def config_names() -> list[str]:
    """The built-in experiment configs' names (``quickstart``, ...), sorted."""
    return sorted(p.stem for p in CONFIGS.glob("*.toml")) if CONFIGS.is_dir() else []


def suggest(value: str, choices: list[str] | tuple[str, ...], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` (written with ``prefix``), or an empty string."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def builtin_table(name: str) -> Path:
    """The folder of built-in table ``name``; an unknown name is a one-line error listing the built-ins."""
    names = table_names()
    if name not in names:
        raise HwsearchError(f"{PREFIX}{name} is not a built-in latency table{suggest(name, names, PREFIX)}; the built-ins are {', '.join(PREFIX + n for n in names) or 'none'} (list them with `hwsearch tables`).")
    return TABLES / name


def builtin_config(name: str) -> Path:
    """The file of built-in config ``name`` (``builtin:quickstart``); an unknown name is a one-line error."""
    names = config_names()
    if name.removesuffix(".toml") not in names:
        raise HwsearchError(f"{PREFIX}{name} is not a built-in config{suggest(name, names, PREFIX)}; the built-ins are {', '.join(PREFIX + n for n in names) or 'none'}.")
    return CONFIGS / f"{name.removesuffix('.toml')}.toml"


def _is_table(path: Path) -> bool:
    return (path / "table.csv").is_file()


def resolve_table(value: str, base_dir: Path | None = None, key: str = "table") -> Path:
    """The table folder ``value`` names (absolute, resolved): ``builtin:NAME``; an absolute path;
    a relative path against ``base_dir`` (a config's folder), then the working directory, then
    the built-in tables. An error names ``key``, the value and every place it looked."""
    if value.startswith(PREFIX):
        return builtin_table(value[len(PREFIX):]).resolve()
    raw = Path(value).expanduser()
    if raw.is_absolute():
        looked = [raw]
    else:
        looked = ([base_dir / raw] if base_dir is not None else []) + [Path.cwd() / raw]
        if raw.name in table_names() and raw.parent in (Path("."), Path("latency_tables")):
            looked.append(TABLES / raw.name)
    for path in dict.fromkeys(looked):
        if _is_table(path):
            return path.resolve()
    names = table_names()
    raise HwsearchError(f"{key} is {value!r}, which is not a latency table folder (no table.csv in {', '.join(str(p) for p in dict.fromkeys(looked))}){suggest(raw.name, names, PREFIX)}; "
                        f"pass a folder with table.csv, a built-in table ({', '.join(PREFIX + n for n in names) or 'none installed'}), or make one with `hwsearch profile`.")


def is_packaged(table_dir: str | Path) -> bool:
    """True for a table folder inside the installed package (a wheel's built-in table: read-only, its
    adaptations go to the user cache). A source checkout's built-ins resolve to the repository's
    ``latency_tables/`` and are not packaged."""
    try:
        return Path(table_dir).resolve().is_relative_to(PACKAGE)
    except OSError:
        return False


def display_name(table_dir: str | Path) -> str:
    """``builtin:NAME`` for a built-in table's folder, else the path as given (for summaries and provenance)."""
    path = Path(table_dir)
    name = path.name
    if name in table_names() and path.resolve() == (TABLES / name).resolve():
        return PREFIX + name
    return str(table_dir)

"""A run directory's files: private to their owner, and left as they were by a start that fails.

- :func:`private_dir` makes ``runs/NAME/`` mode 0700 (also when it exists already); while a session
  runs, :func:`run_files` sets the umask to 0o077, so every file it writes (config.json, study.db,
  the results, the baselines' runs) is readable by its owner only.
- :func:`run_files` also turns the ways the disk itself fails into one-line errors naming the path:
  no space left (``OSError`` ENOSPC / EDQUOT, SQLite's "database or disk is full": free disk space,
  finished trials are kept) and a ``study.db`` that is not a readable SQLite database.
- :class:`StartGuard`: a start that fails before its first trial is asked (bad table, bad model
  option, full disk, Ctrl-C while the baseline trains) leaves ``config.json`` as it was and removes
  the ``study.db`` it created, so it pins the run directory to nothing and the next start with a
  fixed config proceeds.
- :func:`check_tables`: the configured latency tables are loaded (and so checked whole) before the
  run directory is touched.
- :func:`run_log`: while a session runs, ``search.log`` in the run directory receives what the
  ``hwsearch`` loggers say (one line per finished trial, a failed trial's error with its traceback,
  the table check), every Python warning, and an error that stops the session with its traceback;
  :func:`log_text` appends text (the end-of-search summary). Appended to by every session.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hwsearch import context
from hwsearch.config import ExperimentConfig, read_saved_config
from hwsearch.errors import HwsearchError
from hwsearch.tables.table import load_table

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
LOG_FILE = "search.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STUDY_FILES = ("study.db", "study.db-journal", "study.db-wal", "study.db-shm")


def check_tables(cfg: ExperimentConfig) -> None:
    """Load every device's table (a custom ``$HWSEARCH_PREDICTOR`` reads its own files): a damaged
    table is a one-line error before anything is written."""
    if os.environ.get(context.PREDICTOR_ENV):
        return
    for device in cfg.devices:
        load_table(device.table, warn_provenance=False)


def private_dir(run_dir: Path) -> Path:
    """``run_dir`` created (with its parents) and made 0700; returned."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir.chmod(0o700)
    return run_dir


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and not any(exc is s for s in seen):
        seen.append(exc)
        yield exc
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__


def disk_error(run_dir: Path, exc: BaseException) -> HwsearchError | None:
    """The one-line error for a full disk or an unreadable study.db behind ``exc``, else None."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            where = cause.filename or "its files"
        elif isinstance(cause, sqlite3.OperationalError) and "disk is full" in str(cause):
            where = run_dir / "study.db"
        else:
            where = None
        if where is not None:
            return HwsearchError(f"No space left on the disk of run directory {str(run_dir)!r} (writing {where}); free disk space, "
                                 "then run the same command again (finished trials are kept).")
        if type(cause) is sqlite3.DatabaseError:  # "file is not a database", "database disk image is malformed"
            return HwsearchError(f"Study storage {str(run_dir / 'study.db')!r} is not a readable SQLite database ({cause}); move it away (or delete the "
                                 "run directory) to start the run over, or restore it from a copy.")
    return None


@contextlib.contextmanager
def run_files(run_dir: Path) -> Iterator[None]:
    """While a session runs: files private to their owner (umask 0o077), disk failures as one line."""
    old = os.umask(0o077)
    try:
        yield
    except HwsearchError:
        raise
    except Exception as exc:
        mapped = disk_error(run_dir, exc)
        if mapped is None:
            raise
        raise mapped from None
    finally:
        os.umask(old)


class StartGuard:
    """Set ``started = True`` once the first trial can be asked; until then, an exception restores
    ``config.json`` (checked readable on entry) and removes a ``study.db`` that did not exist."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.started = False

    def __enter__(self) -> StartGuard:
        path = self.run_dir / "config.json"
        self.config = path.read_bytes() if path.is_file() else None
        if self.config is not None:
            read_saved_config(path)  # damaged: a one-line error before anything is rewritten
        self.had_study = (self.run_dir / "study.db").exists()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None or self.started:
            return False
        with contextlib.suppress(OSError):  # best effort: the failure itself may be a full disk
            path = self.run_dir / "config.json"
            if self.config is None:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.read_bytes() != self.config:
                _write_bytes(path, self.config)
            if not self.had_study:
                for name in STUDY_FILES:
                    (self.run_dir / name).unlink(missing_ok=True)
        return False


def _write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class _LogFile(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - a log line lost (full disk) is not worth a traceback on screen
        pass


@contextlib.contextmanager
def run_log(run_dir: Path) -> Iterator[logging.Logger]:
    """While a session runs: the ``hwsearch`` loggers (INFO and up) and Python's warnings also go to
    ``run_dir/search.log``; an exception that ends the session is logged with its traceback."""
    handler = _LogFile(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger("hwsearch")
    old_level, old_show = root.level, warnings.showwarning
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    log = logging.getLogger("hwsearch.search")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        old_show(message, category, filename, lineno, file, line)
        log.warning("%s: %s", category.__name__, message)

    warnings.showwarning = show
    log.info("session started in %s (pid %d)", run_dir, os.getpid())
    try:
        yield log
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            log.error("session interrupted (%s)", type(exc).__name__)
        else:
            log.error("session stopped: %s", exc, exc_info=not isinstance(exc, HwsearchError))
        raise
    finally:
        warnings.showwarning = old_show
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def log_text(run_dir: Path, text: str) -> None:
    """Append ``text`` (e.g. the printed summary) to ``run_dir/search.log`` with a time stamp."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(Path(run_dir) / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write(f"{stamp} summary:\n{text.rstrip()}\n")

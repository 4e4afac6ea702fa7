"""English sentences shipped with Python itself, and task-agnostic fidelity metrics for embeddings.

Corpus: the pydoc topic texts (``pydoc_data.topics``) and the docstrings of a fixed list of
standard-library modules (and their public members), whitespace-normalised, split into
sentences, filtered (6-60 words, mostly letters, no code), de-duplicated case-insensitively,
sorted, then shuffled with a fixed seed and cut into train / val / test. The same Python
version gives the same splits.

Extra training sentences (:func:`source_sentences`, the ``extra_train`` task option): the
docstrings of every module, class and function in the standard library's own source files (read
with :mod:`ast`, nothing imported; test suites and IDLE left out), filtered the same way, less
every sentence of the corpus (so none is a val or test sentence). About 7,000 sentences on Python
3.11: unlabeled text for distillation and calibration, appended to the train split only.

Fidelity of candidate embeddings ``E`` to the dense model's ``D`` (rows = sentences):
``cosine`` (mean row-wise cosine similarity), ``spearman`` (Spearman correlation of all pairwise
cosine similarities within ``E`` vs within ``D``) and ``top10`` (mean overlap of each sentence's
10 nearest neighbours, itself excluded, under ``E`` vs under ``D``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import random
import re
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np

from hwsearch.errors import HwsearchError

METRICS = ("cosine", "spearman", "top10")
STDLIB_MODULES = (
    "builtins", "os", "os.path", "sys", "re", "json", "collections", "itertools", "functools", "string", "math", "statistics",
    "random", "datetime", "pathlib", "shutil", "subprocess", "threading", "queue", "socket", "http.client", "urllib.request",
    "email.message", "csv", "sqlite3", "logging", "argparse", "unittest", "doctest", "inspect", "typing", "dataclasses",
    "enum", "decimal", "fractions", "heapq", "bisect", "array", "struct", "zipfile", "tarfile", "tempfile", "glob", "fnmatch",
    "textwrap", "difflib", "pickle", "copy", "pprint", "contextlib", "abc", "io", "time", "calendar", "hashlib", "hmac",
    "secrets", "uuid", "base64", "binascii", "codecs", "locale", "gettext", "traceback", "warnings", "weakref", "gc",
    "asyncio", "concurrent.futures", "multiprocessing", "signal", "select", "selectors", "ssl", "ftplib", "smtplib",
    "xml.etree.ElementTree", "html.parser", "configparser", "shelve", "dbm", "gzip", "bz2", "lzma", "zlib", "operator",
    "numbers", "cmath", "platform", "sysconfig", "importlib", "pkgutil", "ast", "dis", "tokenize", "keyword", "code", "pdb",
    "timeit", "trace", "tracemalloc", "ipaddress", "mimetypes", "webbrowser", "wave", "colorsys", "graphlib", "zoneinfo",
)
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE = re.compile(r"[{}\[\]<>=_|\\`]|>>>|\.\.\.|::|\(\)|\w\(")


def _texts() -> list[str]:
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)]
    for name in STDLIB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        texts.append(inspect.getdoc(mod) or "")
        for attr in sorted(dir(mod)):
            if not attr.startswith("_"):
                doc = inspect.getdoc(getattr(mod, attr, None))
                if doc and getattr(getattr(mod, attr, None), "__module__", name) == name:
                    texts.append(doc)
    return texts


def _good(sentence: str) -> bool:
    words = sentence.split()
    if not 6 <= len(words) <= 60 or _CODE.search(sentence) or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    return letters >= 0.9 * len(sentence)


def _usable(texts: list[str]) -> dict[str, str]:
    """Lower-cased sentence -> the first usable sentence of that spelling, over paragraphs of ``texts``."""
    seen: dict[str, str] = {}
    for text in texts:
        for para in re.split(r"\n\s*\n", text):
            for s in _SENT.split(" ".join(para.split())):
                if _good(s):
                    seen.setdefault(s.lower(), s)
    return seen


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """Every usable, de-duplicated sentence, sorted (deterministic for one Python version)."""
    return tuple(sorted(_usable(_texts()).values()))


SOURCE_SKIP = frozenset({"test", "tests", "idlelib", "turtledemo", "lib2to3", "site-packages"})


def _source_texts() -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(lib.rglob("*.py")):
        if SOURCE_SKIP.intersection(path.relative_to(lib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        texts.extend(doc for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                     and (doc := ast.get_docstring(node)))
    return texts


@lru_cache(maxsize=1)
def source_sentences() -> tuple[str, ...]:
    """Usable sentences of the standard library's source docstrings that are not in :func:`sentences`, sorted."""
    corpus = {s.lower() for s in sentences()}
    return tuple(sorted(s for k, s in _usable(_source_texts()).items() if k not in corpus))


def splits(n_val: int, n_test: int, n_train: int, seed: int = 0, extra_train: int = 0) -> dict[str, list[str]]:
    """Seeded train / val / test sentence lists (val and test first, train from the rest), then
    ``extra_train`` of the :func:`source_sentences` (seeded) appended to train."""
    pool = list(sentences())
    if n_val + n_test + 1 > len(pool) or min(n_val, n_test, n_train) < 1:
        raise HwsearchError(f"The corpus has {len(pool)} sentences; n_val={n_val}, n_test={n_test}, n_train={n_train} must be >= 1 and leave training sentences; lower them.")
    if isinstance(extra_train, bool) or not isinstance(extra_train, int) or extra_train < 0:
        raise HwsearchError(f"Task option extra_train={extra_train!r} is not allowed; give a whole number >= 0 of extra training sentences, e.g. 7000 (0: none).")
    random.Random(seed).shuffle(pool)
    rest = pool[n_val + n_test :]
    train = rest[:n_train]
    if extra_train:
        extra = list(source_sentences())
        random.Random(seed).shuffle(extra)
        train += extra[:extra_train]
    return {"val": pool[:n_val], "test": pool[n_val : n_val + n_test], "train": train}


def corpus_digest(extra_train: int = 0) -> str:
    text = "\n".join(sentences()) + ("\n\n" + "\n".join(source_sentences()) if extra_train else "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fidelity(candidate: np.ndarray, dense: np.ndarray, k: int = 10) -> dict[str, float]:
    """``cosine``, ``spearman`` and ``top10`` agreement of ``candidate`` embeddings with ``dense`` ones."""
    from scipy.stats import spearmanr

    if candidate.shape != dense.shape or len(dense) <= k:
        raise HwsearchError(f"Fidelity needs two embedding arrays of one shape with more than {k} rows; got {candidate.shape} and {dense.shape}.")
    e, d = _unit(candidate), _unit(dense)
    cosine = float((e * d).sum(1).mean())
    se, sd = e @ e.T, d @ d.T
    iu = np.triu_indices(len(d), 1)
    spearman = float(spearmanr(se[iu], sd[iu]).statistic)
    np.fill_diagonal(se, -np.inf)
    np.fill_diagonal(sd, -np.inf)
    ne, nd = np.argsort(-se, axis=1)[:, :k], np.argsort(-sd, axis=1)[:, :k]
    top = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ne, nd)]))
    return {"cosine": cosine, "spearman": spearman, "top10": top}

"""``cifar10``: the standard CIFAR-10 "python version" batches from a directory the user gives.

Expected files: ``data_batch_1`` … ``data_batch_5`` and ``test_batch`` (pickled dicts with
``b"data"``: N×3072 uint8 rows, channel-major 32×32, and ``b"labels"``). The validation split is
the last 10% of the training batches (fixed order, so it is deterministic).

A batch is a pickle, and ``pickle.load`` runs whatever a pickle names: the batches are read with a
restricted unpickler that builds only what CIFAR-10 batches contain (dicts, lists, bytes/str,
numbers and numpy arrays, through numpy's own array-rebuilding helpers) and refuses any other
name before it is imported or called, so a crafted batch file runs nothing.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwsearch.errors import HwsearchError
from hwsearch.tasks.base import Split, Task

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(1, 3, 1, 1)
EXPECTED = "data_batch_1..data_batch_5 and test_batch (CIFAR-10 python version)"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # batches.meta label_names


# the only globals a CIFAR-10 batch (pickled by Python 2 or 3, numpy 1 or 2, protocols 2-5) needs
ALLOWED_GLOBALS = frozenset({
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`: data in, never code run."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds; only dicts, lists, bytes, numbers and numpy arrays are read, nothing is run")
        return super().find_class(module, name)


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            d = BatchUnpickler(fh, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        x = data.reshape(len(data), 3, 32, 32)
    except Exception as exc:  # noqa: BLE001 - any malformed content gets the same one-line error
        raise HwsearchError(f"CIFAR-10 file {str(path)!r} is malformed ({type(exc).__name__}: {exc}); expected a pickled dict with b'data' (N×3072 uint8) and b'labels'.") from None
    if len(x) != len(labels):
        raise HwsearchError(f"CIFAR-10 file {str(path)!r} has {len(x)} images but {len(labels)} labels; re-download the batch.")
    return x, labels


def _normalise(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float32) / 255.0) - MEAN) / STD


@dataclass
class Cifar10Task(Task):
    data_dir: str = ""
    _splits: dict[str, Split] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        root = Path(self.data_dir).expanduser()
        if not self.data_dir or not root.is_dir():
            raise HwsearchError(f"CIFAR-10 directory {self.data_dir!r} does not exist; pass --data-dir DIR holding {EXPECTED}.")
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise HwsearchError(f"CIFAR-10 directory {str(root)!r} lacks {', '.join(missing)}; expected {EXPECTED}.")
        parts = [_load_batch(root / n) for n in names[:5]]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        n_val = max(1, len(y) // 10)
        xt, yt = _load_batch(root / "test_batch")
        self._splits = {
            "train": Split(_normalise(x[:-n_val]), y[:-n_val]),
            "val": Split(_normalise(x[-n_val:]), y[-n_val:]),
            "test": Split(_normalise(xt), yt),
        }

    def split(self, name: str) -> Split:
        return self._splits[name]

    def fingerprint(self) -> dict:
        sizes = {k: len(v) for k, v in self._splits.items()}
        return {**super().fingerprint(), "data_dir": str(Path(self.data_dir).resolve()), "sizes": sizes}

    def class_names(self) -> list[str]:
        return list(CLASSES)

    def preprocessing(self) -> dict:
        return {"source": f"CIFAR-10 python version batches ({EXPECTED}): uint8 rows of 3072 values, channel-major 32x32 RGB",
                "order": ["scale", "normalize", "layout"], "scale": 1 / 255,
                "mean": MEAN.ravel().tolist(), "std": STD.ravel().tolist(), "layout": "NCHW float32, shape (N, 3, 32, 32), RGB",
                "split": {"rule": "train: data_batch_1..5 minus the last 10% of their rows; validation: that last 10%; test: test_batch, in file order",
                          "sizes": {k: len(v) for k, v in self._splits.items()}}}


def make_task(data_dir: str = "", **options) -> Cifar10Task:
    return Cifar10Task(name="cifar10", in_channels=3, num_classes=10, input_size=(32, 32), data_dir=data_dir, **options)

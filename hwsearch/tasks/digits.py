"""``digits``: scikit-learn's bundled 8×8 handwritten digits, upsampled to 32×32.

Fixed, seeded, stratified splits: 60% train, 20% validation, 20% test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hwsearch.errors import HwsearchError
from hwsearch.tasks.base import Split, Task

SPLIT_SEED = 20240601


def _upsample(images: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return ((x - 0.5) / 0.5).numpy().astype(np.float32)


@dataclass
class DigitsTask(Task):
    size: int = 32
    _splits: dict[str, Split] = field(default_factory=dict, repr=False)
    _indices: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # rows of load_digits() per split

    def __post_init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        x, y = _upsample(data.images, self.size), data.target.astype(np.int64)
        idx = np.arange(len(y))
        train, rest = train_test_split(idx, test_size=0.4, stratify=y, random_state=SPLIT_SEED)
        val, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=SPLIT_SEED)
        self._indices = {"train": train, "val": val, "test": test}
        self._splits = {name: Split(x[i], y[i]) for name, i in self._indices.items()}

    def split(self, name: str) -> Split:
        return self._splits[name]

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "size": self.size, "split_seed": SPLIT_SEED}

    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def preprocessing(self) -> dict:
        """Exactly what :func:`_upsample` and the split do, so plain numpy + scikit-learn reproduce the inputs bit for bit."""
        return {
            "source": "sklearn.datasets.load_digits(): images (N, 8, 8) with pixel values 0..16, labels = target",
            "order": ["scale", "resize", "normalize", "layout"],
            "scale": 1 / 16,
            "resize": {"size": [self.size, self.size], "mode": "bilinear", "coordinate_transformation_mode": "half_pixel",
                       "what": "torch.nn.functional.interpolate(mode='bilinear', align_corners=False): output pixel i samples source "
                               "coordinate (i + 0.5) * 8 / size - 0.5, clamped to [0, 7]"},
            "mean": [0.5], "std": [0.5],
            "layout": f"NCHW float32, shape (N, 1, {self.size}, {self.size})",
            "split": {"rule": "sklearn.model_selection.train_test_split(arange(N), test_size=0.4, stratify=target, random_state=seed) -> train, rest; "
                              "train_test_split(rest, test_size=0.5, stratify=target[rest], random_state=seed) -> validation, test",
                      "seed": SPLIT_SEED, "sizes": {k: len(v) for k, v in self._indices.items()},
                      "test_indices": [int(i) for i in self._indices["test"]]},
        }


def make_task(**options) -> DigitsTask:
    size = options.get("size", 32)
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise HwsearchError(f"digits task option size={size!r} is not allowed; use an integer >= 8 (pixels per side; default 32).")
    return DigitsTask(name="digits", in_channels=1, num_classes=10, input_size=(size, size), **options)

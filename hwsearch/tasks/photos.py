"""Task ``imagenet-photos``: fidelity of a compressed ImageNet classifier to its dense pretrained self.

Data: real photos that are already on disk (nothing is downloaded, nothing is trained): the 20
labeled ImageNet validation photos packaged in the ``foolbox`` wheel (``foolbox/data/imagenet_XX_LABEL.jpg``,
read as files, the package is never imported), scikit-learn's ``china.jpg`` / ``flower.jpg``,
matplotlib's ``grace_hopper.jpg`` and scikit-image's data photos when those packages are
installed, and optionally a directory of the user's own photos (``photo_dir``, unlabeled).
Each photo gives ``views_per_photo`` fixed views: the standard eval view (short side resized to
256/224 of ``size``, centre crop), its mirror image, then seeded random square crops (every
other one mirrored). Splits are drawn by photo, so no scored photo is seen by calibration or
recovery: train = every unlabeled photo and :data:`TRAIN_LABELED` labeled ones; the other labeled
photos are halved (seeded) into val and test. ``Split.y`` is the ImageNet class where known, else -1.

Metric: the dense baseline's logits are the targets (:meth:`PhotosTask.targets`); a candidate is
judged by mean KL(dense || candidate) (``objective="kl"``, scored as exp(-KL), 1.0 = identical),
top-1 agreement or top-5 agreement. Accuracy on the labeled rows is a separate sanity check.
Task options: ``size``, ``views_per_photo``, ``normalize`` ("imagenet" or "tf"), ``objective``, ``seed``, ``photo_dir``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.tasks.base import Split, Task, check_split, torch_outputs

TASK_NAME = "imagenet-photos"
OPTIONS = ("size", "views_per_photo", "normalize", "objective", "seed", "photo_dir")
OBJECTIVES = ("kl", "top1", "top5")
NORMALIZATIONS = {  # name -> (mean, std) applied to RGB pixels 0..255
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    "tf": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),  # EfficientNet-Lite's (x * 255 - 127) / 128
}
FOOLBOX_FIX = "`pip install --no-deps foolbox==3.3.4`"
LABELED_NAME = re.compile(r"imagenet_(\d+)_(\d+)\.jpg")
UNLABELED = {"sklearn": ("datasets/images", ("china.jpg", "flower.jpg")),
             "matplotlib": ("mpl-data/sample_data", ("grace_hopper.jpg",)),
             "skimage": ("data", ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"))}
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
TRAIN_LABELED = 4  # labeled photos that join the unlabeled ones in train (calibration / distillation)
EVAL_RESIZE = 256 / 224  # short side before the centre crop, relative to the crop
CROP_SCALE = (0.35, 1.0)  # side of a random square crop, as a share of the photo's short side
FP32_MAX_ABS_DIFF = 1e-3  # dense MobileNetV2, ORT vs torch on val/test: 2.3e-5 on logits up to 30; 1e-3 (~3e-5 relative) leaves room for deeper / fine-tuned nets, any graph error is > 0.1
QUANTIZED_MIN_TOP1 = 0.8  # ORT int8 (QDQ, per-channel) dense MobileNetV2 vs its fp32 self: 0.97 val, 0.92 test (72 inputs each); a broken graph agrees on ~0


@dataclass(frozen=True)
class Photo:
    """One photo file: where it comes from and its ImageNet class (-1: unknown)."""

    source: str
    path: Path
    label: int = -1

    @property
    def id(self) -> str:
        return f"{self.source}/{self.path.name}"


def package_dir(name: str) -> Path | None:
    """A top-level package's folder, found without importing it (None: not installed)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    return Path(spec.origin).parent


def foolbox_data() -> Path:
    """The folder of the foolbox wheel's sample photos."""
    candidates = [d / "data" for d in [package_dir("foolbox")] if d]
    try:
        candidates.append(Path(str(importlib.metadata.distribution("foolbox").locate_file("foolbox/data"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in candidates:
        if folder.is_dir() and any(LABELED_NAME.fullmatch(p.name) for p in folder.iterdir()):
            return folder
    raise HwsearchError(f"Task {TASK_NAME!r} needs the ImageNet validation photos packaged in the foolbox wheel (foolbox/data/imagenet_XX_LABEL.jpg) and found none; install them with {FOOLBOX_FIX} (its files are only read).")


def user_photos(photo_dir: str) -> list[Photo]:
    root = Path(photo_dir).expanduser()
    if not root.is_dir():
        raise HwsearchError(f"Task option photo_dir={photo_dir!r} is not a directory; give a folder of .jpg / .png photos.")
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not found:
        raise HwsearchError(f"Task option photo_dir={photo_dir!r} holds no .jpg / .jpeg / .png files; add photos or drop the option.")
    return [Photo("photo_dir", p) for p in found]


def find_photos(photo_dir: str = "") -> list[Photo]:
    """Every photo the task uses: the labeled foolbox ones (by file name), then the unlabeled ones."""
    labeled = [Photo("foolbox", p, int(m.group(2))) for p in sorted(foolbox_data().iterdir()) if (m := LABELED_NAME.fullmatch(p.name))]
    photos = [p for p in labeled if 0 <= p.label < 1000]
    for package, (sub, names) in UNLABELED.items():
        root = package_dir(package)
        photos += [Photo(package, root / sub / n) for n in names if root and (root / sub / n).is_file()]
    return photos + (user_photos(photo_dir) if photo_dir else [])


def assign_splits(photos: list[Photo], seed: int) -> dict[str, list[Photo]]:
    """Photos per split: train = unlabeled + TRAIN_LABELED labeled; the remaining labeled photos halved into val and test."""
    labeled = [p for p in photos if p.label >= 0]
    if len(labeled) < TRAIN_LABELED + 2:
        raise HwsearchError(f"Task {TASK_NAME!r} found {len(labeled)} labeled ImageNet photos, fewer than the {TRAIN_LABELED + 2} its splits need; reinstall them with {FOOLBOX_FIX}.")
    order = [labeled[i] for i in np.random.default_rng(seed).permutation(len(labeled))]
    n_val = (len(labeled) - TRAIN_LABELED) // 2
    chosen = {"train": [p for p in photos if p.label < 0] + order[:TRAIN_LABELED],
              "val": order[TRAIN_LABELED : TRAIN_LABELED + n_val], "test": order[TRAIN_LABELED + n_val :]}
    return {name: sorted(group, key=lambda p: p.id) for name, group in chosen.items()}


def photo_views(path: Path, size: int, views: int, rng: np.random.Generator) -> np.ndarray:
    """``views`` uint8 RGB views (views, size, size, 3) of one photo (see :meth:`PhotosTask.preprocessing`)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
    w, h = img.size
    short = round(size * EVAL_RESIZE)  # torchvision Resize(short) + CenterCrop(size)
    rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    resized = img.resize((rw, rh), Image.BILINEAR)
    top, left = round((rh - size) / 2), round((rw - size) / 2)
    base = np.asarray(resized.crop((left, top, left + size, top + size)))
    out = [base, base[:, ::-1]][:views]
    for k in range(2, views):
        side = max(1, round(rng.uniform(*CROP_SCALE) * min(w, h)))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        view = np.asarray(img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side)))
        out.append(view[:, ::-1] if k % 2 else view)
    return np.stack(out)


def normalise(pixels: np.ndarray, mode: str) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW with the ``mode`` mean / std."""
    mean, std = (np.asarray(v, np.float32).reshape(1, 3, 1, 1) for v in NORMALIZATIONS[mode])
    return np.ascontiguousarray((pixels.transpose(0, 3, 1, 2).astype(np.float32) - mean) / std)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fidelity(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Candidate logits vs the dense logits of the same inputs: mean KL(dense || candidate) in nats, top-1 / top-5 agreement."""
    outputs, targets = np.asarray(outputs), np.asarray(targets)
    if outputs.ndim != 2 or outputs.shape != targets.shape:
        raise HwsearchError(f"Candidate logits of shape {outputs.shape} cannot be compared with dense logits of shape {targets.shape}; both must be (inputs, classes).")
    lp, lq = log_softmax(targets), log_softmax(outputs)
    kl = float(max(0.0, (np.exp(lp) * (lp - lq)).sum(axis=1).mean()))
    dense = targets.argmax(axis=1)
    k = min(5, outputs.shape[1])
    top5 = np.argpartition(-outputs, k - 1, axis=1)[:, :k]
    return {"kl": kl, "top1": float((outputs.argmax(axis=1) == dense).mean()), "top5": float((top5 == dense[:, None]).any(axis=1).mean())}


def _int_option(name: str, value: Any, low: int, high: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HwsearchError(f"Task option {name}={value!r} is not allowed for task {TASK_NAME!r}; use an integer in {low}..{high} ({hint}).")
    return value


@dataclass
class PhotosTask(Task):
    name: str = TASK_NAME
    in_channels: int = 3
    num_classes: int = 1000
    input_size: tuple[int, int] = (224, 224)
    default_model: str = "mobilenetv2_imagenet"
    families: tuple[str, ...] = ("edge",)
    fp32_max_abs_diff: float = FP32_MAX_ABS_DIFF
    min_top1_agreement: float = QUANTIZED_MIN_TOP1
    size: int = 224
    views_per_photo: int = 9
    normalize: str = "imagenet"
    objective: str = "kl"
    seed: int = 0
    photo_dir: str = ""
    _photos: dict[str, list[Photo]] = field(default_factory=dict, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        _int_option("size", self.size, 32, 1024, "pixels per side; default 224")
        _int_option("views_per_photo", self.views_per_photo, 1, 64, "views of each photo; default 9")
        _int_option("seed", self.seed, 0, 2**32 - 1, "the split and crop seed; default 0")
        if self.normalize not in NORMALIZATIONS:
            raise HwsearchError(f"Task option normalize={self.normalize!r} is unknown for task {TASK_NAME!r}; use one of {', '.join(NORMALIZATIONS)}.")
        if self.objective not in OBJECTIVES:
            raise HwsearchError(f"Task option objective={self.objective!r} is unknown for task {TASK_NAME!r}; use one of {', '.join(OBJECTIVES)}.")
        if not isinstance(self.photo_dir, str):
            raise HwsearchError(f"Task option photo_dir={self.photo_dir!r} is not a path string; give a folder of .jpg / .png photos.")
        self.input_size = (self.size, self.size)
        self._photos = assign_splits(find_photos(self.photo_dir), self.seed)

    # --- data -------------------------------------------------------------------------------
    def photos(self, split: str) -> list[Photo]:
        """The photos of a split; row ``v * len(photos) + i`` of the split is view ``v`` of photo ``i``."""
        return list(self._photos[check_split(split)])

    def split(self, name: str) -> Split:
        if name not in self._cache:
            photos = self.photos(name)
            views = [photo_views(p.path, self.size, self.views_per_photo, np.random.default_rng([self.seed, zlib.crc32(p.id.encode())])) for p in photos]
            pixels = np.stack(views, axis=1).reshape(-1, self.size, self.size, 3)  # view-major: head(n) starts with the eval views
            labels = np.tile(np.array([p.label for p in photos], np.int64), self.views_per_photo)
            self._cache[name] = Split(normalise(pixels, self.normalize), labels)
        return self._cache[name]

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for split in ("train", "val", "test"):
            for p in self._photos[split]:
                digest.update(f"{split}:{p.id}:{p.label}:".encode() + p.path.read_bytes())
        return {"task": self.name, "photos": digest.hexdigest()[:16], "size": self.size, "views_per_photo": self.views_per_photo,
                "normalize": self.normalize, "seed": self.seed}

    def metric_name(self) -> str:
        return f"fidelity_{self.objective}"

    def preprocessing(self) -> dict[str, Any]:
        s, short = self.size, round(self.size * EVAL_RESIZE)
        mean, std = NORMALIZATIONS[self.normalize]
        return {
            "sources": {"labeled": "foolbox wheel foolbox/data/imagenet_XX_LABEL.jpg (LABEL = ImageNet class index), read as files",
                        "unlabeled": [f"{pkg}/{sub}/{n} (if installed)" for pkg, (sub, names) in UNLABELED.items() for n in names]
                        + ([f"photo_dir {self.photo_dir}: *.jpg, *.jpeg, *.png"] if self.photo_dir else [])},
            "decode": "PIL.Image.open(path).convert('RGB')",
            "order": ["decode", "view", "normalize", "layout"],
            "eval_view": {"resize_short_side": short, "long_side": "int(short * long / short_side_of_photo)", "mode": "PIL Image.resize(..., Image.BILINEAR) (antialiased)",
                          "center_crop": s, "crop_offset": f"top = round((h - {s}) / 2), left = round((w - {s}) / 2)",
                          "equivalent": f"torchvision.transforms.Resize({short}) then CenterCrop({s}) on a PIL image"},
            "views": {"per_photo": self.views_per_photo, "0": "the eval view", "1": "the eval view mirrored left-right",
                      "k >= 2": f"square crop of side round(u * short side), u ~ U{CROP_SCALE}, left ~ integers(0, w - side + 1), top ~ integers(0, h - side + 1), "
                                f"resized to {s}x{s} by PIL Image.resize(({s}, {s}), Image.BILINEAR, box=crop); mirrored when k is odd",
                      "rng": "numpy.random.default_rng([seed, zlib.crc32(photo_id.encode())]) per photo, drawn in view order"},
            "normalize": {"name": self.normalize, "formula": "(pixel - mean) / std on RGB pixels 0..255",
                          "mean": [round(m, 6) for m in mean], "std": [round(v, 6) for v in std],
                          "mean_01": [round(m / 255, 6) for m in mean], "std_01": [round(v / 255, 6) for v in std]},
            "layout": f"NCHW float32 (N, 3, {s}, {s}) RGB",
            "rows": "view-major: row v * n_photos + i is view v of the split's photo i (photos in the order listed)",
            "output": "1000 ImageNet logits; scored against the dense model's logits on the same inputs",
            "split": {"rule": f"labeled photos sorted by file name, permuted by numpy.random.default_rng(seed); the first {TRAIN_LABELED} and every unlabeled photo -> train, "
                              "the rest halved -> val (first half), test; each split sorted by photo id",
                      "seed": self.seed, "photos": {k: [p.id for p in v] for k, v in self._photos.items()},
                      "sizes": {k: {"photos": len(v), "inputs": len(v) * self.views_per_photo} for k, v in self._photos.items()}},
        }

    # --- metric -----------------------------------------------------------------------------
    def targets(self, split: str, baseline: nn.Module) -> np.ndarray:
        """The dense baseline's logits on a split (the fidelity reference), cached per split."""
        key = ("dense", check_split(split))
        if key not in self._cache:
            self._cache[key] = torch_outputs(baseline, *self.feeds(split))
        return self._cache[key]

    def metrics(self, outputs: np.ndarray, targets: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        """``kl`` (nats), ``top1``, ``top5`` agreement with the dense logits, and ``accuracy`` when ``labels`` are given."""
        out = fidelity(outputs, targets)
        return out if labels is None else {**out, "accuracy": self.accuracy(outputs, labels)}

    @staticmethod
    def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy on the rows with a known ImageNet label (label >= 0)."""
        labels = np.asarray(labels)
        known = labels >= 0
        if not known.any():
            raise HwsearchError("These inputs have no ImageNet labels (every label is -1); compute accuracy on the val or test split.")
        return float((np.asarray(outputs)[known].argmax(axis=1) == labels[known]).mean())

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:  # type: ignore[override]
        """exp(-mean KL) for ``objective="kl"`` (1.0 = identical to the dense model), else the agreement; higher is better."""
        m = fidelity(outputs, targets)
        return float(np.exp(-m["kl"])) if self.objective == "kl" else m[self.objective]


def make_task(**options: Any) -> PhotosTask:
    for key in options:
        if key not in OPTIONS:
            raise HwsearchError(f"Task option {key!r} is unknown for task {TASK_NAME!r}; allowed options are {', '.join(OPTIONS)}.")
    return PhotosTask(**options)


__all__ = ["NORMALIZATIONS", "OBJECTIVES", "OPTIONS", "Photo", "PhotosTask", "assign_splits", "fidelity", "find_photos", "make_task", "normalise", "photo_views"]

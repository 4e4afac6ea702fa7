"""The edge family: ImageNet-pretrained edge CNNs (EfficientNet-Lite0, MobileNetV2) from packaged weights.

The CNN family's mechanics (dependency-graph pruning, distilled recovery, the NCHWc lowering and
its tables) with three differences:
- models load their packaged ImageNet weights (:mod:`.weights`) instead of starting untrained;
- the baseline is the pretrained model itself when the task keeps the ImageNet classes (a
  fidelity task such as ``imagenet-photos``), else the pretrained backbone with a new head,
  fine-tuned on the task's training split and cached (``fashion``);
- channels are cut in multiples of 16 (int8 kernels slow down on other counts).
A model checks the task's input size, and where its ImageNet outputs are used as they are, the
task's input convention (``task.normalize``), before it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from hwsearch.errors import HwsearchError
from hwsearch.families.base import Baseline
from hwsearch.families.cnn import CNNFamily
from hwsearch.options import TrainConfig

MIN_INPUT = 32  # both models divide the input by 32


def _factories() -> dict[str, Callable[..., nn.Module]]:
    from hwsearch.families.edge.models import EfficientNetLite0, MobileNetV2ImageNet

    return {"mobilenetv2_imagenet": MobileNetV2ImageNet, "efficientnet_lite0": EfficientNetLite0}


MODEL_NAMES = ("mobilenetv2_imagenet", "efficientnet_lite0")


class EdgeFamily(CNNFamily):
    name = "edge"
    default_channel_multiple = 16

    def models(self) -> tuple[str, ...]:
        return MODEL_NAMES

    def build_model(self, spec: str, task: Any, options: Mapping[str, Any]) -> nn.Module:
        from hwsearch.families.edge.weights import WEIGHTS, load_pretrained

        if spec not in MODEL_NAMES:
            raise HwsearchError(f"Model {spec!r} is unknown for the edge family; use one of {', '.join(MODEL_NAMES)}.")
        if options:
            raise HwsearchError(f"Model {spec!r} takes no model options (got {sorted(options)}); remove [model_options].")
        if task.in_channels not in (1, 3):
            raise HwsearchError(f"Model {spec!r} takes 3-channel (RGB) or 1-channel (grayscale) inputs, but task {task.name!r} has {task.in_channels} channels; use an RGB or grayscale task.")
        if min(task.input_size) < MIN_INPUT:
            raise HwsearchError(f"Model {spec!r} needs inputs of at least {MIN_INPUT}x{MIN_INPUT} pixels, but task {task.name!r} gives {task.input_size[0]}x{task.input_size[1]}; "
                                f"set the task's size option to {MIN_INPUT} or more (224 for ImageNet fidelity, 64 for fashion).")
        want, got = WEIGHTS[spec].normalize, getattr(task, "normalize", None)
        if task.num_classes == 1000 and got is not None and got != want:  # the ImageNet outputs used as they are (a fine-tune adapts)
            raise HwsearchError(f"Model {spec!r} was trained on {want!r}-normalised inputs, but task {task.name!r} uses normalize={got!r}; set the task option normalize = {want!r}.")
        size = {"image_size": tuple(task.input_size)} if spec == "efficientnet_lite0" else {}  # its "SAME" paddings depend on the size
        model = _factories()[spec](in_channels=task.in_channels, num_classes=task.num_classes, **size)
        return load_pretrained(model, spec, task.in_channels, task.num_classes).eval()

    def load_baseline(self, task: Any, spec: str, options: Mapping[str, Any], train_config: TrainConfig, *,
                      retrain: bool = False, verbose: bool = True) -> Baseline:
        from hwsearch.families.cnn.train import load_baseline
        from hwsearch.families.edge.weights import WEIGHTS

        if task.num_classes == 1000 and task.in_channels == 3:  # the ImageNet model itself: its fidelity to itself is 1
            return Baseline(self.build_model(spec, task, options), spec, dict(options), WEIGHTS[spec].path(), 1.0, 1.0)
        return load_baseline(task, spec, lambda: self.build_model(spec, task, options), dict(options), train_config, retrain=retrain, verbose=verbose)

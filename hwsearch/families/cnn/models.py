"""Built-in image models, written in plain torch (no torchvision): resnet20, mobilenetv2, mobilenetv3, vgg.

Every factory takes ``in_channels`` and ``num_classes`` keyword arguments (the contract user
model factories follow too) plus its own width options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3, 1)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet: a stem conv, 3 stages of ``blocks`` basic blocks, global pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128), blocks: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, widths[0]), nn.ReLU())
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stage = [BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(blocks)]
            layers.append(nn.Sequential(*stage))
            cin = w
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU(), *_conv_bn(hidden, cout, 1)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


# (expansion, out channels, repeats, first stride): a CIFAR-sized MobileNetV2
_MBV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1))


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32×32 inputs: inverted residuals with depthwise 3×3 convs."""

    def __init__(self, in_channels: int, num_classes: int, width_mult: float = 1.0, last_channels: int = 320) -> None:
        super().__init__()
        c = lambda n: max(8, int(round(n * width_mult / 8)) * 8)  # noqa: E731
        cin = c(32)
        blocks: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, cin), nn.ReLU())]
        for t, ch, n, s in _MBV2_SETTING:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c(ch), s if i == 0 else 1, t))
                cin = c(ch)
        blocks.append(nn.Sequential(*_conv_bn(cin, c(last_channels), 1), nn.ReLU()))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c(last_channels), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation gate: global pool, 1×1 reduce + ReLU, 1×1 expand + hard-sigmoid, times the input."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))
        return x * gate


class V3Block(nn.Module):
    """MobileNetV3 bottleneck: 1×1 expand, depthwise k×k, optional squeeze-excitation, 1×1 project; ReLU or hard-swish."""

    def __init__(self, cin: int, hidden: int, cout: int, k: int, stride: int, se: bool, hswish: bool) -> None:
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [*_conv_bn(cin, hidden, 1), act()]
        layers += [*_conv_bn(hidden, hidden, k, stride, groups=hidden), act()]
        if se:
            layers.append(SqueezeExcite(hidden, max(8, hidden // 4)))
        layers += _conv_bn(hidden, cout, 1)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


# (kernel, hidden, out, squeeze-excite, hard-swish, stride): MobileNetV3-Small's pattern, sized for small inputs
_MBV3_SETTING = ((3, 16, 16, True, False, 2), (3, 72, 24, False, False, 1), (3, 88, 24, False, False, 1), (5, 96, 40, True, True, 2),
                 (5, 240, 40, True, True, 1), (5, 120, 48, True, True, 1), (5, 288, 96, True, True, 2))


class MobileNetV3(nn.Module):
    """MobileNetV3-Small-style network: hard-swish stem, bottlenecks with squeeze-excitation gates, hard-swish head.

    Its hard-swish and hard-sigmoid stay float under ONNX Runtime's int8 kernels, so whole-model int8
    pays a quantize/dequantize pair around each of them (the "int8 slower than fp32" trap)."""

    def __init__(self, in_channels: int, num_classes: int, width_mult: float = 1.0, last_channels: int = 576) -> None:
        super().__init__()
        c = lambda n: max(8, int(round(n * width_mult / 8)) * 8)  # noqa: E731
        cin = c(16)
        blocks: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, cin), nn.Hardswish())]
        for k, hidden, out, se, hs, s in _MBV3_SETTING:
            blocks.append(V3Block(cin, c(hidden), c(out), k, s, se, hs))
            cin = c(out)
        blocks.append(nn.Sequential(*_conv_bn(cin, c(last_channels), 1), nn.Hardswish()))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c(last_channels), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class VGG(nn.Module):
    """Plain conv stack (conv-bn-relu, max-pool between stages), global pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, cfg: Sequence[int | str] = (32, 32, "M", 64, 64, "M", 128, 128, "M", 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [*_conv_bn(cin, int(v)), nn.ReLU()]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def resnet20(*, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128)) -> nn.Module:
    return ResNet20(in_channels, num_classes, widths)


def mobilenetv2(*, in_channels: int, num_classes: int, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV2(in_channels, num_classes, width_mult)


def mobilenetv3(*, in_channels: int, num_classes: int, width_mult: float = 1.0) -> nn.Module:
    return MobileNetV3(in_channels, num_classes, width_mult)


def vgg(*, in_channels: int, num_classes: int, cfg: Sequence[int | str] = (32, 32, "M", 64, 64, "M", 128, 128, "M", 256)) -> nn.Module:
    return VGG(in_channels, num_classes, cfg)


BUILTIN_MODELS: dict[str, Callable[..., nn.Module]] = {"resnet20": resnet20, "mobilenetv2": mobilenetv2, "mobilenetv3": mobilenetv3, "vgg": vgg}

"""Model family registry: which family builds, analyses, prunes and lowers a model.

Built-in model names map to their family (``resnet20``, ``mobilenetv2``, ``vgg`` → ``cnn``;
``mobilenetv2_imagenet``, ``efficientnet_lite0`` → ``edge``; ``all-minilm-l6-v2`` → ``encoder``). A user model ``package.module:function`` belongs to the CNN
family unless its factory names another with a ``hwsearch_family`` attribute (e.g.
``my_factory.hwsearch_family = "encoder"``).
"""

from __future__ import annotations

from collections.abc import Callable

from hwsearch.errors import HwsearchError
from hwsearch.families.base import Baseline, Lowering, ModelFamily
from hwsearch.imports import import_object


def _cnn() -> ModelFamily:
    from hwsearch.families.cnn import CNNFamily

    return CNNFamily()


def _edge() -> ModelFamily:
    from hwsearch.families.edge import EdgeFamily

    return EdgeFamily()


def _encoder() -> ModelFamily:
    from hwsearch.families.encoder import EncoderFamily

    return EncoderFamily()


FAMILIES: dict[str, Callable[[], ModelFamily]] = {"cnn": _cnn, "edge": _edge, "encoder": _encoder}
BUILTIN_MODELS = {"resnet20": "cnn", "mobilenetv2": "cnn", "mobilenetv3": "cnn", "vgg": "cnn", "mobilenetv2_imagenet": "edge", "efficientnet_lite0": "edge",
                  "all-minilm-l6-v2": "encoder", "minilm-l6": "encoder"}


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise HwsearchError(f"Model family {name!r} is unknown; use one of {', '.join(FAMILIES)}.")
    return FAMILIES[name]()


def family_for(model_spec: str) -> ModelFamily:
    """The family of a built-in model name or a user ``package.module:function`` (CNN unless it says otherwise)."""
    if model_spec in BUILTIN_MODELS:
        return get_family(BUILTIN_MODELS[model_spec])
    if ":" in model_spec:
        return get_family(getattr(import_object(model_spec, "Model"), "hwsearch_family", "cnn"))
    raise HwsearchError(f"Model {model_spec!r} is unknown; use one of {', '.join(BUILTIN_MODELS)} or package.module:function.")


__all__ = ["BUILTIN_MODELS", "FAMILIES", "Baseline", "Lowering", "ModelFamily", "family_for", "get_family"]

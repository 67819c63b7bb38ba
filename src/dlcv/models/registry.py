"""The name -> model registry, in the manner of timm: families register builders under names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dlcv.errors import OptionError, UserError

TASKS = ("segment", "classify")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    builder: Callable[..., nn.Module]
    #: torchvision weights enum member for ``--weights imagenet`` (downloaded by torchvision), if any.
    imagenet_weights: Any | None
    description: str
    #: The smallest batch it trains on: DeepLab's image-pooling branch has a BatchNorm over one value per image.
    min_batch_size: int = 1
    #: Channels-last weights on a CPU too (on a GPU every model gets them): set where bench/layout_bench.py
    #: measured oneDNN's NHWC kernels training it faster (the small-image ResNets, VGG16-BN, DeepLabv3+);
    #: FCN and U-Net train slower or no faster so.
    channels_last_on_cpu: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    task: str,
    description: str,
    imagenet_weights: Any | None = None,
    min_batch_size: int = 1,
    channels_last_on_cpu: bool = False,
):
    """Decorator: register ``builder(num_classes, **kwargs) -> nn.Module`` under ``name``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(
            name, task, builder, imagenet_weights, description, min_batch_size, channels_last_on_cpu
        )
        return builder

    return decorate


def model_names(task: str | None = None) -> list[str]:
    return sorted(name for name, entry in _REGISTRY.items() if task is None or entry.task == task)


def get_entry(name: str, task: str | None = None) -> ModelEntry:
    entry = _REGISTRY.get(name)
    if entry is None or (task is not None and entry.task != task):
        raise UserError(f"unknown model {name!r}; choose from: {', '.join(model_names(task))}")
    return entry


def runs_channels_last(name: str, on_gpu: bool) -> bool:
    """Whether model ``name`` runs with channels-last weights: always on a GPU (tensor cores convolve in
    NHWC, and cuDNN then picks NHWC kernels for every convolution); on a CPU where its entry says."""
    return on_gpu or get_entry(name).channels_last_on_cpu


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    return get_entry(name).builder(num_classes=num_classes, **kwargs)


def check_model_kwargs(entry: ModelEntry, kwargs: dict[str, Any]) -> None:
    """Build the model on the meta device (no memory, no time), so that a wrong ``model_kwargs`` fails
    before any data is read."""
    if not kwargs:
        return
    try:
        with torch.device("meta"):
            entry.builder(num_classes=2, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:120]
        raise OptionError(
            "model_kwargs", f"model_kwargs {kwargs!r}: model {entry.name!r} refuses them ({reason})"
        ) from None

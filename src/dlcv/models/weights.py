"""Loading pretrained weights: ``imagenet`` (torchvision), a state-dict file, or ``none``.

Files are state dicts in torchvision's layout (``features.0.weight`` ...), as ``.pth``/``.pt`` or
``.safetensors``. A model translates that layout to its own with an optional
``adapt_state_dict(state) -> state`` method (FCN turns VGG's fc layers into convolutions; VGG16-BN
maps plain VGG16 convolutions onto its own in order). The report says what loaded and what did not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dlcv.errors import UserError, abbreviate, counted
from dlcv.models.registry import ModelEntry


@dataclass
class WeightsReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)  # model tensors left at their initialisation
    unused: list[str] = field(default_factory=list)  # file tensors with no place in the model

    def summary(self) -> str:
        lines = [f"weights: loaded {counted(len(self.loaded), 'tensor')} from {self.source}"]
        for names, noun, state in (
            (self.not_loaded, "model tensor", "not loaded"),
            (self.unused, "file tensor", "unused"),
        ):
            if names:
                lines.append(f"weights: {counted(len(names), noun)} {state}: {abbreviate(names)}")
        return "\n".join(lines)


def check_weights_file(path: str | Path) -> Path:
    """``--weights PATH``, checked to be a file: before a run decodes its data, and again when it is read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    return path


def check_weights_spec(spec: str) -> None:
    """``--weights`` before a run decodes its data: ``none``, ``imagenet`` (fetched when loaded), or a file."""
    if spec not in ("none", "imagenet"):
        check_weights_file(spec)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch file (a bare state dict, or one under ``state_dict``/``model``)."""
    path = check_weights_file(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure of a user's file is the user's to fix
        raise UserError(f"{path}: not a readable weights file ({str(exc).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: holds no state dict of tensors")
    return state


def imagenet_state_dict(entry: ModelEntry) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for the model's backbone, downloaded (or read from the cache)."""
    if entry.imagenet_weights is None:
        raise UserError(f"model {entry.name!r} has no ImageNet weights; use --weights none or PATH")
    try:
        return entry.imagenet_weights.get_state_dict(progress=False)
    except Exception as exc:
        raise UserError(
            f"could not get torchvision's ImageNet weights {entry.imagenet_weights} "
            f"({str(exc).splitlines()[0][:120]}); "
            "download them where there is internet (they are cached under $TORCH_HOME) or pass --weights PATH"
        ) from None


def load_weights(model: nn.Module, spec: str, entry: ModelEntry) -> WeightsReport | None:
    """Load ``spec`` (``imagenet``, ``none`` or a path) into ``model``; ``None`` when nothing was asked."""
    if spec == "none":
        return None
    state = imagenet_state_dict(entry) if spec == "imagenet" else read_state_dict(spec)
    return load_state(model, state, source=spec)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> WeightsReport:
    adapt = getattr(model, "adapt_state_dict", None)
    if adapt is not None:
        state = adapt(state)
    own = model.state_dict()
    report = WeightsReport(source)
    usable = {}
    for key, tensor in state.items():
        if key in own and own[key].shape == tensor.shape:
            usable[key] = tensor.to(own[key].dtype)
            report.loaded.append(key)
        else:
            report.unused.append(key)
    if not usable:
        raise UserError(f"{source}: none of its tensors fit model {type(model).__name__} ({abbreviate(list(state))})")
    model.load_state_dict(usable, strict=False)
    report.not_loaded = [key for key in own if key not in usable and not key.endswith("num_batches_tracked")]
    return report

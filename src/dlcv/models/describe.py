"""The architecture as PyTorch prints it, with parameter counts: the report's first answer."""

from __future__ import annotations

from dlcv.models.registry import build_model, get_entry

#: Classes a model is described with when none are given: the course data's.
DEFAULT_CLASSES = {"segment": 7, "classify": 50}


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def describe_module(model, name: str, num_classes: int) -> str:
    """``model`` as PyTorch prints it, then what it is and its parameter counts."""
    total, trainable = count_parameters(model)
    return (
        f"{model}\n\n{name}: {get_entry(name).description}, {num_classes} classes\n"
        f"total parameters: {total:,}\ntrainable parameters: {trainable:,}"
    )


def describe_model(name: str, num_classes: int | None = None) -> str:
    """The architecture of ``name`` built for ``num_classes`` (by default the course data's)."""
    classes = num_classes or DEFAULT_CLASSES[get_entry(name).task]
    return describe_module(build_model(name, classes), name, classes)

"""Segmentation losses: cross-entropy, soft Dice and Lovasz-softmax, alone or summed (``ce+lovasz``).

Cross-entropy trains per-pixel likelihood, but the graders score mean IoU, where a small class
(rangeland) counts as much as a large one. Lovasz-softmax (Berman, Rannen Triki and Blaschko,
CVPR 2018) optimises the Jaccard index itself through its convex Lovasz extension; soft Dice
(Milletari et al., 2016) is the overlap measure made differentiable with probabilities. Both average
the classes present in the ground truth, as Berman et al. do, so every present class weighs the
same whatever its area. No class is ignored: unknown pixels are scored by the graders too.

Class weights multiply each class's term: in cross-entropy (torch's weighted mean) and in the
averages over classes of Dice and Lovasz.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlcv.errors import OptionError

#: Loss terms, joined by ``+`` in a spec: ``lovasz`` scores the whole batch as one set of pixels
#: (closest to the data-set IoU the graders compute), ``lovasz_image`` each image on its own.
LOSS_TERMS = ("ce", "dice", "lovasz", "lovasz_image")


def parse_loss(spec: str) -> tuple[str, ...]:
    """``"ce+lovasz"`` -> ``("ce", "lovasz")``; a user error for an unknown or repeated term."""
    terms = tuple(term.strip() for term in str(spec).split("+"))
    unknown = [term for term in terms if term not in LOSS_TERMS]
    if unknown or len(set(terms)) != len(terms):
        raise OptionError(
            "loss", f"loss {spec!r}: use one or more of {', '.join(LOSS_TERMS)} joined by '+' (each once)"
        )
    return terms


def class_weight_vector(
    spec: Sequence[float] | Mapping[str, float] | None, class_names: Sequence[str]
) -> list[float] | None:
    """Class weights from a config: a weight per class in order, or ``{class name: weight}`` (others 1)."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(class_names))
        if unknown:
            raise OptionError(
                "class_weights",
                f"class_weights: unknown class(es) {', '.join(map(str, unknown))}; classes: {', '.join(class_names)}",
            )
        weights: list[Any] = [spec.get(name, 1.0) for name in class_names]
    elif isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == len(class_names):
        weights = list(spec)
    else:
        raise OptionError(
            "class_weights",
            f"class_weights: give {len(class_names)} numbers ({', '.join(class_names)}) "
            f"or a mapping such as {{{class_names[2]}: 2.0}}, not {spec!r}",
        )
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0 for w in weights):
        raise OptionError("class_weights", f"class_weights: every weight must be a positive number, not {spec!r}")
    return [float(w) for w in weights]


def _present_class_mean(per_class: torch.Tensor, present: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last dimension (classes) of the present classes, weighted; then over any leading one."""
    mask = present.to(per_class.dtype)
    if weights is not None:
        mask = mask * weights
    return ((per_class * mask).sum(-1) / mask.sum(-1).clamp_min(1e-12)).mean()


def _flatten(probs: torch.Tensor, labels: torch.Tensor, per_image: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """N x C x H x W probabilities and N x H x W labels -> (groups x C x pixels, the one-hot truth alike)."""
    classes = probs.shape[1]
    truth = F.one_hot(labels, classes).movedim(-1, 1).to(probs.dtype)
    if per_image:
        return probs.flatten(2), truth.flatten(2)
    return probs.movedim(1, 0).reshape(1, classes, -1), truth.movedim(1, 0).reshape(1, classes, -1)


def lovasz_grad(truth_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted in decreasing order.

    ``truth_sorted`` is the class's 0/1 ground truth in that order (last dimension); element i is
    J(first i+1 pixels mispredicted) - J(first i), where J(M) = 1 - |F \\ M| / |F u M| and F is the
    class's pixels (Berman et al., Algorithm 1). Counts are integers, so exact at any image size.
    """
    truth = truth_sorted.long()
    total = truth.sum(-1, keepdim=True)
    intersection = total - truth.cumsum(-1)
    union = total + (1 - truth).cumsum(-1)
    jaccard = 1.0 - intersection.double() / union.double()
    return torch.cat([jaccard[..., :1], jaccard.diff(dim=-1)], dim=-1).to(truth_sorted.dtype)


def lovasz_softmax(
    probs: torch.Tensor, labels: torch.Tensor, per_image: bool = False, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Lovasz-softmax loss of N x C x H x W probabilities against N x H x W class indices."""
    probs, truth = _flatten(probs, labels, per_image)
    errors = (truth - probs).abs()
    errors_sorted, order = errors.sort(dim=-1, descending=True)
    per_class = (errors_sorted * lovasz_grad(truth.gather(-1, order))).sum(-1)
    return _present_class_mean(per_class, truth.sum(-1) > 0, class_weights)


def dice_loss(
    probs: torch.Tensor, labels: torch.Tensor, per_image: bool = False, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Dice loss, 1 - 2|P n T| / (|P| + |T|) per class, of N x C x H x W probabilities."""
    probs, truth = _flatten(probs, labels, per_image)
    intersection = (probs * truth).sum(-1)
    cardinality = probs.sum(-1) + truth.sum(-1)
    per_class = 1.0 - 2.0 * intersection / cardinality.clamp_min(1e-12)
    return _present_class_mean(per_class, truth.sum(-1) > 0, class_weights)


class SegmentationLoss(nn.Module):
    """The sum of the terms of a spec such as ``ce+lovasz``, on logits N x C x H x W (computed in float32)."""

    def __init__(self, spec: str = "ce", class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.terms = parse_loss(spec)
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        # Not persistent: checkpoints keep the weights in the task's hyperparameters, not its state dict.
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        total = logits.new_zeros(())
        if "ce" in self.terms:
            total = total + F.cross_entropy(logits, labels, weight=self.class_weights)
        probs = logits.softmax(dim=1) if set(self.terms) - {"ce"} else None
        if "dice" in self.terms:
            total = total + dice_loss(probs, labels, class_weights=self.class_weights)
        if "lovasz" in self.terms:
            total = total + lovasz_softmax(probs, labels, class_weights=self.class_weights)
        if "lovasz_image" in self.terms:
            total = total + lovasz_softmax(probs, labels, per_image=True, class_weights=self.class_weights)
        return total

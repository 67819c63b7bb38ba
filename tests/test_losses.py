"""Segmentation losses against their definitions: Dice and Jaccard by hand, the Lovasz extension by level sets."""

from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcv.data.palette import CLASS_NAMES
from dlcv.errors import UserError
from dlcv.training.losses import (
    SegmentationLoss,
    class_weight_vector,
    dice_loss,
    lovasz_softmax,
    parse_loss,
)

CLASSES = 4


def one_hot_probs(classes: torch.Tensor, num_classes: int = CLASSES) -> torch.Tensor:
    return F.one_hot(classes, num_classes).movedim(-1, 1).double()


def random_case(seed: int, shape=(2, 5, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(CLASSES - 1, shape, generator=generator)  # class 3 never present
    probs = torch.randn(shape[0], CLASSES, *shape[1:], generator=generator, dtype=torch.float64).softmax(1)
    return probs, labels


def jaccard_loss_of_set(mispredicted: set[int], truth: set[int]) -> float:
    """Berman et al.'s Delta_J(M) = |M| / |F u M| of a class with pixels F and mispredicted pixels M."""
    union = truth | mispredicted
    return len(mispredicted) / len(union) if union else 0.0


def lovasz_by_level_sets(errors: np.ndarray, truth: set[int]) -> float:
    """The Lovasz extension as the integral over t of Delta_J({i : error_i >= t}) (the Choquet integral)."""
    levels = np.concatenate([np.unique(errors)[::-1], [0.0]])
    total = 0.0
    for upper, lower in pairwise(levels):
        total += (upper - lower) * jaccard_loss_of_set(set(np.flatnonzero(errors >= upper)), truth)
    return total


@pytest.mark.parametrize("per_image", [False, True])
def test_perfect_predictions_cost_nothing(per_image):
    _, labels = random_case(0)
    probs = one_hot_probs(labels)
    assert lovasz_softmax(probs, labels, per_image=per_image).item() == 0.0
    assert dice_loss(probs, labels, per_image=per_image).item() == 0.0
    logits = 50.0 * probs.float()
    assert SegmentationLoss("ce+dice+lovasz+lovasz_image")(logits, labels).item() < 1e-6


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_of_hard_predictions_is_the_jaccard_loss(per_image):
    """At a one-hot prediction the extension equals 1 - IoU of each present class, averaged."""
    _, labels = random_case(1)
    predicted = random_case(2)[1]
    groups = [(labels[i], predicted[i]) for i in range(len(labels))] if per_image else [(labels, predicted)]
    expected = []
    for truth, guess in groups:
        ious = [
            ((truth == c) & (guess == c)).sum().item() / ((truth == c) | (guess == c)).sum().item()
            for c in range(CLASSES)
            if (truth == c).any()
        ]
        expected.append(1 - np.mean(ious))
    value = lovasz_softmax(one_hot_probs(predicted), labels, per_image=per_image).item()
    assert value == pytest.approx(np.mean(expected), abs=1e-12)


def test_lovasz_of_soft_predictions_is_the_extension():
    probs, labels = random_case(3, shape=(1, 4, 5))
    losses = []
    for c in range(CLASSES):
        truth = (labels.flatten() == c).numpy()
        if truth.any():
            errors = np.abs(truth - probs[0, c].flatten().numpy())
            losses.append(lovasz_by_level_sets(errors, set(np.flatnonzero(truth))))
    assert lovasz_softmax(probs, labels).item() == pytest.approx(np.mean(losses), abs=1e-12)


def test_dice_of_hard_predictions():
    _, labels = random_case(4)
    predicted = random_case(5)[1]
    expected = [
        1 - 2 * ((labels == c) & (predicted == c)).sum().item() / ((labels == c).sum() + (predicted == c).sum()).item()
        for c in range(CLASSES)
        if (labels == c).any()
    ]
    assert dice_loss(one_hot_probs(predicted), labels).item() == pytest.approx(np.mean(expected), abs=1e-12)


def test_class_weights_weigh_the_class_average():
    probs, labels = random_case(6)
    single = [lovasz_softmax(probs, labels, class_weights=torch.eye(CLASSES)[c].double()).item() for c in range(3)]
    weights = torch.tensor([1.0, 3.0, 0.5, 7.0], dtype=torch.float64)  # class 3 is absent: its weight is unused
    expected = sum(w * v for w, v in zip(weights[:3].tolist(), single, strict=True)) / weights[:3].sum().item()
    assert lovasz_softmax(probs, labels, class_weights=weights).item() == pytest.approx(expected, abs=1e-12)
    logits = probs.float().log()
    weighted = SegmentationLoss("ce", class_weights=weights.tolist())(logits, labels)
    assert weighted.item() == pytest.approx(F.cross_entropy(logits, labels, weight=weights.float()).item(), rel=1e-6)


def test_gradients_are_finite_and_descent_learns_the_labels():
    _, labels = random_case(7, shape=(2, 8, 8))
    logits = torch.zeros(2, CLASSES, 8, 8, requires_grad=True)
    loss_fn = SegmentationLoss("ce+dice+lovasz+lovasz_image", class_weights=[1.0, 2.0, 1.0, 1.0])
    optimizer = torch.optim.SGD([logits], lr=20.0)
    first = None
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(logits, labels)
        loss.backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
        first = loss.item() if first is None else first
        optimizer.step()
    assert loss.item() < first / 10
    assert torch.equal(logits.argmax(1), labels)


def test_lovasz_runs_in_bfloat16_autocast_precision():
    """Under bf16-mixed the logits arrive in bfloat16; the loss computes in float32."""
    probs, labels = random_case(8)
    logits = probs.log().bfloat16()
    assert SegmentationLoss("lovasz")(logits, labels).dtype == torch.float32


def test_loss_specs():
    assert parse_loss("ce+lovasz") == ("ce", "lovasz")
    assert parse_loss(" dice ") == ("dice",)
    for bad in ("focal", "ce+ce", "ce+", ""):
        with pytest.raises(UserError, match="loss"):
            parse_loss(bad)


def test_class_weight_specs():
    assert class_weight_vector(None, CLASS_NAMES) is None
    assert class_weight_vector({"rangeland": 2}, CLASS_NAMES) == [1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    assert class_weight_vector([1, 2, 3, 4, 5, 6, 7], CLASS_NAMES) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    for bad, message in (
        ({"grass": 2.0}, "unknown class"),
        ([1.0, 2.0], "give 7 numbers"),
        ("rangeland", "give 7 numbers"),
        ({"rangeland": -1.0}, "positive"),
        ({"rangeland": "x"}, "positive"),
    ):
        with pytest.raises(UserError, match=message):
            class_weight_vector(bad, CLASS_NAMES)

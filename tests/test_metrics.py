"""The evaluator against a brute-force pixel count of the graders' rule, on crafted masks."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlcv.data.palette import PALETTE
from dlcv.metrics import confusion_matrix, evaluate_mask_folders, iou_per_class
from tests.conftest import run_cli

#: Colours a mask may hold: the palette, red (unknown by rule) and some off-palette shades.
COLOURS = np.vstack([PALETTE, [[255, 0, 0], [200, 40, 250], [90, 250, 130], [140, 140, 140]]]).astype(np.uint8)


def brute_force_iou(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Per-pixel counting, written independently of dlcv: threshold, code, class, count."""
    lookup = {3: 0, 6: 1, 5: 2, 2: 3, 1: 4, 7: 5, 0: 6, 4: 6}

    def classify(pixel) -> int:
        r, g, b = (int(c >= 128) for c in pixel)
        return lookup[4 * r + 2 * g + b]

    tp, pred_count, true_count = [0] * 6, [0] * 6, [0] * 6
    for predicted, truth in pairs:
        for p_pixel, t_pixel in zip(predicted.reshape(-1, 3), truth.reshape(-1, 3), strict=True):
            p, t = classify(p_pixel), classify(t_pixel)
            for k in range(6):
                pred_count[k] += p == k
                true_count[k] += t == k
                tp[k] += p == k and t == k
    return [tp[k] / (pred_count[k] + true_count[k] - tp[k]) for k in range(6)]


def write_crafted(tmp_path: Path, count: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    pairs = []
    for i in range(count):
        truth = COLOURS[rng.integers(0, len(COLOURS), size=(12, 9))]
        predicted = truth.copy()
        flip = rng.random((12, 9)) < 0.5
        predicted[flip] = COLOURS[rng.integers(0, len(COLOURS), size=int(flip.sum()))]
        # Names that sort differently in the two folders would break order-based pairing.
        Image.fromarray(truth).save(gt_dir / f"{i:04d}_mask.png")
        Image.fromarray(predicted).save(pred_dir / f"{i:04d}_mask.png")
        pairs.append((predicted, truth))
    (gt_dir / "0000_sat.jpg").write_bytes(b"not read: ground truth is the .png files")
    return pred_dir, gt_dir, pairs


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluator_matches_brute_force(tmp_path, workers):
    pred_dir, gt_dir, pairs = write_crafted(tmp_path)
    score = evaluate_mask_folders(pred_dir, gt_dir, workers=workers)
    expected = brute_force_iou(pairs)
    assert np.allclose(score.iou, expected)
    assert score.miou == pytest.approx(np.mean(expected))
    assert score.images == 5
    for side, off in ((0, score.off_palette_predicted), (1, score.off_palette_truth)):
        counts = [off_palette_count(pair[side]) for pair in pairs]
        assert off.pixels == sum(counts) > 0
        assert off.masks == [f"{i:04d}_mask.png" for i, count in enumerate(counts) if count]


def off_palette_count(mask: np.ndarray) -> int:
    palette = {tuple(colour) for colour in PALETTE.tolist()}
    return sum(tuple(pixel) not in palette for pixel in mask.reshape(-1, 3).tolist())


def test_unknown_truth_predicted_as_a_class_is_a_false_positive():
    truth = np.array([[6, 6], [0, 0]])
    predicted = np.array([[0, 6], [0, 0]])
    iou = iou_per_class(confusion_matrix(truth, predicted, 7))
    assert iou[0] == pytest.approx(2 / 3)


def test_grader_text_format(tmp_path, capsys):
    pred_dir, gt_dir, pairs = write_crafted(tmp_path)
    status, out, err = run_cli(capsys, "segment", "eval", "--pred", pred_dir, "--gt", gt_dir)
    assert status == 0
    lines = out.splitlines()
    expected = brute_force_iou(pairs)
    assert lines[:6] == [f"class #{k} : {v:1.5f}" for k, v in enumerate(expected)]
    assert lines[6] == ""
    assert lines[7] == f"mean_iou: {np.mean(expected):f}"
    assert "masks are off-palette" in err


def test_off_palette_warnings_name_the_side_that_holds_them(tmp_path, capsys):
    """Off-palette ground truth (the course's validation set has some) is told apart from off-palette predictions."""
    pred_dir, gt_dir, _ = write_crafted(tmp_path, count=2)
    on_palette = PALETTE[np.zeros((12, 9), dtype=int)]
    shade = on_palette.copy()
    shade[0, :3] = [200, 40, 250]
    for folder, first, second in ((pred_dir, on_palette, on_palette), (gt_dir, on_palette, shade)):
        Image.fromarray(first).save(folder / "0000_mask.png")
        Image.fromarray(second).save(folder / "0001_mask.png")
    status, _, err = run_cli(capsys, "segment", "eval", "--pred", pred_dir, "--gt", gt_dir)
    assert status == 0
    assert err == (
        "warning: 3 pixels in 1 ground-truth masks are off-palette; mapped by the graders' threshold rule "
        "(first: 0001_mask.png)\n"
    )
    status, out, _ = run_cli(capsys, "segment", "eval", "--pred", gt_dir, "--gt", pred_dir, "--json")
    assert json.loads(out)["off_palette"] == {
        "ground_truth": {"pixels": 0, "masks": []},
        "predictions": {"pixels": 3, "masks": ["0001_mask.png"]},
    }


def test_pairs_by_name_not_order(tmp_path):
    pred_dir, gt_dir, _ = write_crafted(tmp_path, count=3)
    score = evaluate_mask_folders(pred_dir, gt_dir, workers=1)
    # An extra prediction that sorts first must not shift the pairing.
    Image.fromarray(PALETTE[np.zeros((12, 9), dtype=int)]).save(pred_dir / "0000_a_mask.png")
    again = evaluate_mask_folders(pred_dir, gt_dir, workers=1)
    assert np.array_equal(score.confusion, again.confusion)
    assert again.unused_predictions == ["0000_a_mask.png"]


def test_missing_prediction_is_a_user_error(tmp_path, capsys):
    pred_dir, gt_dir, _ = write_crafted(tmp_path, count=3)
    (pred_dir / "0001_mask.png").unlink()
    status, _out, err = run_cli(capsys, "segment", "eval", "--pred", pred_dir, "--gt", gt_dir)
    assert status == 2
    assert err == f"error: {pred_dir}: no prediction for 1 ground-truth mask: 0001_mask.png\n"


def test_size_mismatch_is_a_user_error(tmp_path, capsys):
    pred_dir, gt_dir, _ = write_crafted(tmp_path, count=2)
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(pred_dir / "0001_mask.png")
    status, _, err = run_cli(capsys, "segment", "eval", "--pred", pred_dir, "--gt", gt_dir)
    assert status == 2 and "0001_mask.png" in err


def test_json_output(tmp_path, capsys):
    pred_dir, gt_dir, pairs = write_crafted(tmp_path)
    status, out, _ = run_cli(capsys, "segment", "eval", "--pred", pred_dir, "--gt", gt_dir, "--json")
    assert status == 0
    result = json.loads(out)
    assert result["mean_iou"] == pytest.approx(np.mean(brute_force_iou(pairs)))
    assert set(result["iou"]) == {"urban", "agriculture", "rangeland", "forest", "water", "barren"}


def test_real_validation_masks_score_one_against_themselves(real_p2):
    score = evaluate_mask_folders(real_p2 / "validation", real_p2 / "validation")
    assert score.images == 257
    assert np.allclose(score.iou, 1.0)

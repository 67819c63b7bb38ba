"""Folder checks: every kind of bad input is one clear error naming the file at fault."""

import shutil

import numpy as np
import pytest
from PIL import Image

from dlcv.data.landcover import LandCoverDataset, find_pairs
from dlcv.data.palette import CLASS_NAMES, encode_mask
from dlcv.data.transforms import LandCoverAugment
from dlcv.errors import UserError
from tests.conftest import DEVICES, no_host_sync


@pytest.fixture
def folder(tmp_path, landcover_dir):
    target = tmp_path / "train"
    shutil.copytree(landcover_dir / "train", target)
    return target


def test_pairs_are_found_and_decoded(folder):
    dataset = LandCoverDataset(folder, workers=1)
    assert len(dataset) == 12 and dataset.ids[0] == "0000"
    image, mask = dataset[0]
    assert image.shape == (3, 40, 40) and image.dtype.is_floating_point is False
    assert mask.shape == (40, 40) and int(mask.max()) <= 6


def test_resize_keeps_validation_masks_full_size(folder):
    dataset = LandCoverDataset(folder, image_size=24, resize_masks=False, workers=1)
    image, mask = dataset[0]
    assert image.shape == (3, 24, 24) and mask.shape == (40, 40)


def test_resized_training_masks_keep_only_the_classes_they_had(folder):
    full, small = LandCoverDataset(folder, workers=1), LandCoverDataset(folder, image_size=24, workers=1)
    for (_, mask), (_, resized) in zip(full, small, strict=True):
        assert resized.shape == (24, 24) and set(resized.unique().tolist()) <= set(mask.unique().tolist())


def test_plot_shows_image_truth_and_prediction_in_the_palette(folder):
    import matplotlib

    matplotlib.use("Agg")
    dataset = LandCoverDataset(folder, workers=1)
    prediction = dataset.masks[1].numpy()
    figure = dataset.plot(0, prediction=prediction)
    axes = figure.axes
    assert [axis.get_title() for axis in axes] == ["image", "ground truth", "prediction"]
    shown = axes[2].get_images()[0].get_array()
    assert (np.asarray(shown) == encode_mask(prediction)).all() and figure.get_suptitle() == "0000"
    assert len(figure.legends[0].get_texts()) == len(CLASS_NAMES)


def test_joint_transform_keeps_image_and_mask_aligned():
    import torch

    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[:, :, :8, :8] = 255
    mask = (image[:, 0] > 0).to(torch.uint8)
    augment = LandCoverAugment(32, min_scale=1.0)
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_mask = augment(image, mask)
        exact = (out_image[0, 0] == 0) | (out_image[0, 0] == 255)  # away from the blurred edge
        assert torch.equal((out_image[0, 0] == 255)[exact], (out_mask[0] == 1)[exact])
        assert set(out_mask.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize(
    ("breakage", "culprit"),
    [
        (lambda f: (f / "0003_mask.png").unlink(), "0003_sat.jpg"),
        (
            lambda f: [(f / name).unlink() for name in ("0003_mask.png", "0004_mask.png")],
            r"0003_sat.jpg: has no mask \(and 1 more file like it\)",
        ),
        (lambda f: (f / "0004_sat.jpg").unlink(), "0004_mask.png"),
        (lambda f: Image.new("RGB", (10, 10)).save(f / "0005_mask.png"), "0005_mask.png"),
        (lambda f: (f / "0006_sat.jpg").write_bytes(b""), "0006_sat.jpg"),
        (lambda f: (f / "0007_sat.jpg").write_bytes((f / "0007_sat.jpg").read_bytes()[:300]), "0007_sat.jpg"),
        (lambda f: (f / "0008_mask.png").write_text("not a png"), "0008_mask.png"),
        (lambda f: shutil.copy(f / "0009_sat.jpg", f / "0009_sat.png"), "0009_sat.png: a second sat file of 0009"),
        (lambda f: shutil.copy(f / "0001_mask.png", f / "0001_mask.jpg"), "0001_mask.png: a second mask file of 0001"),
    ],
)
def test_bad_pairs_name_the_file(folder, breakage, culprit):
    breakage(folder)
    with pytest.raises(UserError, match=culprit):
        LandCoverDataset(folder, workers=1)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        find_pairs(tmp_path / "nope")
    with pytest.raises(UserError, match="no image/mask pairs"):
        find_pairs(tmp_path)


def test_real_pairs_decode_on_palette(real_p2):
    dataset = LandCoverDataset(real_p2 / "validation", limit=8, workers=1)
    assert len(dataset) == 8 and dataset.images[0].shape == (3, 512, 512)
    assert {int(v) for m in dataset.masks for v in m.unique()} <= set(range(7))


def test_pairs_of_one_size_are_held_as_one_tensor_and_mixed_sizes_as_lists(folder):
    import torch

    uniform = LandCoverDataset(folder, workers=1)
    assert isinstance(uniform.images, torch.Tensor) and uniform.images.shape == (12, 3, 40, 40)
    assert uniform.masks.shape == (12, 40, 40) and uniform.odd_size() is None
    Image.open(folder / "0005_sat.jpg").resize((48, 40)).save(folder / "0005_sat.jpg")
    Image.open(folder / "0005_mask.png").resize((48, 40), Image.NEAREST).save(folder / "0005_mask.png")
    mixed = LandCoverDataset(folder, workers=1)
    assert not mixed.uniform_size() and mixed.odd_size() == folder / "0005_sat.jpg"
    assert mixed[5][0].shape == (3, 40, 48) and mixed[5][1].shape == (40, 48)


@pytest.mark.parametrize("device", DEVICES)
def test_each_pair_of_a_batch_draws_its_own_augmentation(device):
    import torch

    # One picture (a bright corner, labelled 1) eight times: each copy must come out aligned with its
    # mask, and the copies must differ (per-item crops, flips and turns, not one draw for the batch).
    image = torch.zeros(3, 32, 32, dtype=torch.uint8, device=device)
    image[:, :8, :12] = 255
    mask = (image[0] > 0).to(torch.uint8)
    torch.manual_seed(0)
    with no_host_sync(device):  # on a GPU, augmentation never waits for it
        images, masks = LandCoverAugment(24, min_scale=0.5)(image.expand(8, -1, -1, -1), mask.expand(8, -1, -1))
    assert images.shape == (8, 3, 24, 24) and masks.shape == (8, 24, 24) and masks.dtype == torch.int64
    assert images.device.type == masks.device.type == device
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 4
    for out_image, out_mask in zip(images, masks, strict=True):
        exact = (out_image[0] == 0) | (out_image[0] == 255)  # away from the blurred edge
        assert torch.equal((out_image[0] == 255)[exact], (out_mask == 1)[exact])


def test_training_pairs_of_mixed_sizes_are_one_line_naming_the_odd_file(tmp_path, landcover_dir, capsys):
    from tests.conftest import run_cli

    data = tmp_path / "data"
    shutil.copytree(landcover_dir, data)
    odd = data / "train" / "0003_sat.jpg"
    Image.open(odd).resize((48, 40)).save(odd)
    Image.open(data / "train" / "0003_mask.png").resize((48, 40), Image.NEAREST).save(data / "train" / "0003_mask.png")
    out = tmp_path / "run"
    status, _, err = run_cli(capsys, "segment", "train", "--data", data, "--out", out, "--device", "cpu")
    assert status == 2 and err == f"error: {odd}: not the size of the other training pairs; pass --image-size\n"
    assert not out.exists()

"""Classification data: labels from names and CSVs, decoding a folder, on-device batch augmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

from dlcv.data.batch_augment import BatchAugment, random_crop_flip
from dlcv.data.classification import ClassificationDataset, classification_dirs, decode_images, spread
from dlcv.data.labels import ground_truth, label_of, parse_label, read_label_csv, write_label_csv
from dlcv.errors import UserError
from tests.conftest import DEVICES, no_host_sync


@pytest.mark.parametrize(
    ("name", "label"),
    [("0_0.png", 0), ("12_345.png", 12), ("49_12_extra.jpg", 49), ("7_.png", 7), ("cat_1.png", None)],
)
def test_label_of_names(name, label):
    assert label_of(name) == label


@pytest.mark.parametrize("name", ["12.png", "a_1.png", "-1_3.png", "_3.png", "١_2.png"])
def test_names_without_a_label_are_user_errors(name):
    with pytest.raises(UserError, match=name):
        parse_label(f"folder/{name}")


def test_label_csv_both_headers(tmp_path):
    for header in ("filename", "image_id"):
        path = tmp_path / f"{header}.csv"
        path.write_text(f"{header},label\n0_1.png,0\n 3_2.png , 3 \n\n")
        assert read_label_csv(path) == {"0_1.png": 0, "3_2.png": 3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,label\na.png,1\n", "expected the header"),
        ("filename,label\na.png,1\nb.png,2\na.png,1\n", r"line 4: a\.png appears twice"),
        ("filename,label\na.png,cat\n", "line 2: label 'cat' of a.png is not a class number"),
        (
            "filename,label\na.png,4095\nb.png,4096\n",
            r"line 3: label '4096' of b\.png is not a class number \(0 \.\. 4095\)",
        ),
        ("filename,label\na.png\n", "line 2: expected name,label"),
        ("filename,label\n", "no rows"),
        ("", "expected the header"),
    ],
)
def test_bad_label_csv(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as caught:
        read_label_csv(path)
    assert str(path) in str(caught.value)


def test_write_label_csv_sorts_by_name(tmp_path):
    path = tmp_path / "out.csv"
    write_label_csv(path, ["b.png", "10_1.png", "2_1.png"], np.array([1, 10, 2]))
    assert path.read_text() == "image_id,label\n10_1.png,10\n2_1.png,2\nb.png,1\n"
    assert read_label_csv(path) == {"10_1.png": 10, "2_1.png": 2, "b.png": 1}


def test_dataset_decodes_generated_set(classification_dir):
    train, val, csv = classification_dirs(classification_dir)
    assert (train.name, val.name, csv.name) == ("train_50", "val_50", "val_gt.csv")
    dataset = ClassificationDataset(train, workers=2)
    assert dataset.images.shape == (32, 3, 16, 16) and dataset.images.dtype == torch.uint8
    assert dataset.num_classes == 4 and sorted(set(dataset.labels.tolist())) == [0, 1, 2, 3]
    assert dataset.names[0] == "0_0.png" and dataset.labels[0] == 0
    first = np.array(Image.open(train / "0_0.png"))
    assert torch.equal(dataset.images[0], torch.from_numpy(first).permute(2, 0, 1))
    from_csv = ClassificationDataset(val, csv, workers=0)
    assert from_csv.labels.tolist() == ClassificationDataset(val, workers=0).labels.tolist()
    figure = dataset.plot([0, 8, 16], predictions=[0, 2, 2])
    assert len(figure.axes) == 3 and figure.axes[1].title.get_color() == "red"


def test_limit_keeps_every_class(classification_dir):
    assert spread(10, None) == list(range(10)) and spread(10, 3) == [0, 4, 9] and spread(3, 10) == [0, 1, 2]
    subset = ClassificationDataset(classification_dir / "train_50", limit=8, workers=0)
    assert len(subset) == 8 and sorted(set(subset.labels.tolist())) == [0, 1, 2, 3]


def test_generic_layout_and_missing_layout(tmp_path, classification_dir):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    assert classification_dirs(tmp_path) == (tmp_path / "train", tmp_path / "val", None)
    with pytest.raises(UserError, match="train_50/ and val_50/"):
        classification_dirs(classification_dir / "train_50")


def test_csv_naming_unknown_or_missing_images(tmp_path, classification_dir):
    val = classification_dir / "val_50"
    names = sorted(p.name for p in val.iterdir())
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("filename,label\n" + "".join(f"{n},{parse_label(n)}\n" for n in names) + "99_1.png,3\n")
    with pytest.raises(UserError, match=r"unknown\.csv: labels for 1 image not in .*99_1\.png"):
        ClassificationDataset(val, unknown)
    missing = tmp_path / "missing.csv"
    missing.write_text("filename,label\n" + "".join(f"{n},{parse_label(n)}\n" for n in names[1:]))
    with pytest.raises(UserError, match=rf"missing\.csv: no label for 1 image of .*{names[0]}"):
        ClassificationDataset(val, missing)


def test_unreadable_unlabelled_and_mixed_size_images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "0_0.png")
    (folder / "1_0.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(UserError, match=r"1_0\.png: not a readable image"):
        ClassificationDataset(folder)
    (folder / "1_0.png").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "dog.png")
    with pytest.raises(UserError, match=r"dog\.png: file name carries no label"):
        ClassificationDataset(folder)
    (folder / "dog.png").unlink()
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(folder / "1_1.png")
    with pytest.raises(UserError, match=r"1_1\.png: is 8x9 but 0_0\.png is 8x8; images must share one size"):
        ClassificationDataset(folder)
    resized = decode_images(sorted(folder.iterdir()), image_size=4, workers=0)
    assert resized.shape == (2, 3, 4, 4)
    assert ground_truth(folder) == {"0_0.png": 0, "1_1.png": 1}


def _windows(padded: torch.Tensor, size: int) -> list[torch.Tensor]:
    span = padded.shape[-1] - size + 1
    return [padded[:, y : y + size, x : x + size] for y in range(span) for x in range(span)]


def test_random_crop_flip_takes_windows_of_the_padded_image():
    """Every output is one window of the zero-padded image, or its mirror; offsets and flips vary per image."""
    image = (torch.arange(3 * 8 * 8) % 251 + 1).to(torch.uint8).view(3, 8, 8)  # distinct, non-zero values
    batch = image.expand(200, 3, 8, 8).contiguous()
    torch.manual_seed(0)
    out = random_crop_flip(batch, padding=2, flip=True)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    windows = _windows(torch.nn.functional.pad(image, (2, 2, 2, 2)), 8)
    seen = set()
    for crop in out:
        matches = [(i, False) for i, w in enumerate(windows) if torch.equal(crop, w)]
        matches += [(i, True) for i, w in enumerate(windows) if torch.equal(crop, w.flip(-1))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 30  # 25 offsets x 2 flips: many distinct ones among 200 images
    assert {flipped for _, flipped in seen} == {False, True}
    plain = random_crop_flip(batch, padding=0, flip=False)
    assert torch.equal(plain, batch)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_augment_keeps_labels_or_mixes_them(device):
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 5, (64,), device=device)
    with no_host_sync(device):  # on a GPU, augmentation never waits for it
        out, targets = BatchAugment(5, policy="trivialaugment")(images, labels)
    assert out.shape == images.shape and out.dtype == torch.uint8 and torch.equal(targets, labels)
    assert out.device.type == device
    torch.manual_seed(0)
    for mixup, cutmix in ((0.2, 0.0), (0.0, 1.0), (0.2, 1.0)):
        with no_host_sync(device):
            out, targets = BatchAugment(5, policy="randaugment", mixup=mixup, cutmix=cutmix)(images, labels)
        assert out.dtype == torch.float32 and out.shape == images.shape and out.device.type == device
        assert targets.shape == (64, 5) and torch.allclose(targets.sum(dim=1), torch.ones(64, device=device))
        # Each image is a mix of itself and one other: its own label keeps a share, at most two labels have one.
        assert (targets[torch.arange(64, device=device), labels] > 0).all() and ((targets > 0).sum(dim=1) <= 2).all()
    with pytest.raises(ValueError, match="unknown augmentation policy"):
        BatchAugment(5, policy="autoaugment9")

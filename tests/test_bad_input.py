"""Bad input everywhere: every command that reads images, fed every kind of broken or unusual file.

A broken file (truncated, empty, not an image, too large) is one ``error:`` line naming it, exit
status 2, and nothing written; an unusual but valid one (grayscale, RGBA, 16-bit, palette, odd
file names) is read correctly: masks decode to the right classes, images predict.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dlcv.data.palette import PALETTE, decode_mask, encode_mask
from tests.conftest import run_checkpoint_cli, run_cli

ODD_IDS = ("my id", "été 北京")  # a space; accents and CJK


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit RGB, nor a header promising a huge image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def rgb16_png(rgb: np.ndarray) -> bytes:
    """16 bits per channel (each 8-bit value v stored as 257 v)."""
    wide = (rgb.astype(">u2") * 257).reshape(rgb.shape[0], -1)
    return png(rgb.shape[1], rgb.shape[0], 16, 2, b"".join(b"\0" + row.tobytes() for row in wide))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


#: Broken files, by kind: (bytes for a JPEG name, bytes for a PNG name), from a valid RGB image.
def broken(kind: str, image: np.ndarray) -> tuple[bytes, bytes]:
    picture = Image.fromarray(image)
    jpeg, png_bytes = encoded(picture, "JPEG"), encoded(picture, "PNG")
    if kind == "truncated":
        return jpeg[: len(jpeg) // 2], png_bytes[: len(png_bytes) // 2]
    if kind == "empty":
        return b"", b""
    if kind == "text":
        return b"id,label\n0,1\n", b"not an image\n"
    if kind == "huge":  # headers promising 13000 x 13000 and 10^5 x 10^5 pixels; almost no data
        return png(13000, 13000, 8, 2, b""), png(100000, 100000, 8, 2, b"\0")
    raise ValueError(kind)


BROKEN = ("truncated", "empty", "text", "huge")


def assert_clean_error(status: int, err: str, culprit: Path, kind: str) -> None:
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(culprit) in err, err
    assert ("larger than dlcv reads" in err) == (kind == "huge"), err


def palette_mask(classes: np.ndarray) -> Image.Image:
    """The mask as a palette image (mode P) holding the land-cover colours."""
    mask = Image.fromarray(classes.astype(np.uint8), mode="L").convert("P")
    mask.putpalette(PALETTE.reshape(-1).tolist())
    return mask


# ---- segmentation ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    from dlcv.data.synthetic import make_landcover_set

    return make_landcover_set(tmp_path_factory.mktemp("landcover"), train=4, validation=3, size=40, seed=4)


@pytest.fixture(scope="module")
def seg_checkpoint(tmp_path_factory, seg_data, tiny_segment_config) -> Path:
    from dlcv.cli import main

    run = tmp_path_factory.mktemp("runs") / "fcn32s"
    argv = ["segment", "train", "--data", seg_data, "--out", run, "--config", tiny_segment_config, "--model", "fcn32s"]
    assert main([str(a) for a in [*argv, "--epochs", "1", "--batch-size", "2"]]) == 0
    return run / "best.ckpt"


def copy_split(seg_data: Path, tmp_path: Path, split: str = "validation") -> Path:
    target = tmp_path / "data" / split
    shutil.copytree(seg_data / split, target)
    return target


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("which", ["_sat.jpg", "_mask.png"])
def test_segment_train_refuses_a_broken_file(kind, which, seg_data, tiny_segment_config, tmp_path, capsys):
    train = copy_split(seg_data, tmp_path, "train")
    copy_split(seg_data, tmp_path)
    culprit = train / f"0001{which}"
    culprit.write_bytes(broken(kind, np.zeros((8, 8, 3), np.uint8))[which.endswith(".png")])
    status, _, err = run_cli(
        capsys, "segment", "train", "--data", train.parent, "--out", tmp_path / "run", "--config", tiny_segment_config
    )
    assert_clean_error(status, err, culprit, kind)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def unusual_pairs(tmp_path_factory, seg_data) -> tuple[Path, dict[str, np.ndarray]]:
    """A land-cover split in unusual modes and names, with the classes each mask must decode to."""
    folder = tmp_path_factory.mktemp("unusual") / "validation"
    folder.mkdir()
    expected = {}
    sources = sorted(seg_data.joinpath("train").glob("*_sat.jpg"))
    for number, (id_, image_mode, mask_mode) in enumerate(
        [("0000", "L", "P"), ("0001", "RGBA", "RGB16"), ("0002", "I;16", "RGBA"), *((i, "P", "RGB") for i in ODD_IDS)]
    ):
        source = sources[number % len(sources)]
        image = np.asarray(Image.open(source).convert("RGB"))
        classes = decode_mask(np.asarray(Image.open(str(source).replace("_sat.jpg", "_mask.png")).convert("RGB")))
        expected[id_] = classes
        if image_mode == "I;16":
            gray = np.asarray(Image.fromarray(image).convert("L"), dtype=np.uint16) * 257
            Image.fromarray(gray).save(folder / f"{id_}_sat.png")
        else:
            Image.fromarray(image).convert(image_mode).save(folder / f"{id_}_sat.png")
        if mask_mode == "P":
            palette_mask(classes).save(folder / f"{id_}_mask.png")
        elif mask_mode == "RGB16":
            (folder / f"{id_}_mask.png").write_bytes(rgb16_png(encode_mask(classes)))
        else:
            Image.fromarray(encode_mask(classes)).convert(mask_mode).save(folder / f"{id_}_mask.png")
    return folder, expected


def test_unusual_modes_and_names_decode_to_the_right_classes(unusual_pairs):
    from dlcv.data.landcover import LandCoverDataset

    folder, expected = unusual_pairs
    dataset = LandCoverDataset(folder, workers=1)
    assert sorted(dataset.ids) == sorted(expected)
    for id_, mask in zip(dataset.ids, dataset.masks, strict=True):
        assert np.array_equal(mask.numpy(), expected[id_]), id_
    assert dataset.off_palette_pixels == 0
    for image in dataset.images:
        assert image.shape == (3, 40, 40)


# The ids' CJK letters are drawn in the figures' titles as boxes where no installed font has them.
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
def test_segment_train_predict_eval_viz_on_unusual_files(
    unusual_pairs, seg_checkpoint, tiny_segment_config, tmp_path, capsys
):
    folder, _ = unusual_pairs
    data = tmp_path / "data"
    shutil.copytree(folder, data / "train")
    shutil.copytree(folder, data / "validation")
    status, _, err = run_cli(
        capsys, "segment", "train", "--data", data, "--out", tmp_path / "run", "--config", tiny_segment_config,
        "--model", "fcn32s", "--epochs", "1", "--batch-size", "2",
    )  # fmt: skip
    assert status == 0, err

    masks = tmp_path / "masks"
    status, _, err = run_checkpoint_cli(capsys, "segment", "predict", seg_checkpoint, folder, masks, "--device", "cpu")
    assert status == 0, err
    assert sorted(p.name for p in masks.iterdir()) == sorted(p.name for p in folder.glob("*_mask.png"))
    assert all(Image.open(p).size == (40, 40) for p in masks.iterdir())

    # The ground truth in palette, 16-bit and RGBA files scores exactly as its plain RGB copy.
    truth, plain = tmp_path / "truth", tmp_path / "plain"
    shutil.copytree(folder, truth, ignore=shutil.ignore_patterns("*_sat.png"))
    plain.mkdir()
    for mask in truth.iterdir():
        Image.open(mask).convert("RGB").save(plain / mask.name)
    status, unusual_score, err = run_cli(capsys, "segment", "eval", "--pred", masks, "--gt", truth, "--json")
    assert status == 0, err
    status, plain_score, err = run_cli(capsys, "segment", "eval", "--pred", masks, "--gt", plain, "--json")
    assert unusual_score == plain_score
    assert [side["pixels"] for side in json.loads(unusual_score)["off_palette"].values()] == [0, 0]

    figures = tmp_path / "figures"
    status, _, err = run_cli(
        capsys, "segment", "viz", "--data", folder, "--pred", masks, "--ids", *ODD_IDS, "--out", figures
    )
    assert status == 0, err
    assert {f"overlay_{i}.png" for i in ODD_IDS} <= {p.name for p in figures.iterdir()}


@pytest.mark.parametrize("kind", BROKEN)
def test_segment_predict_refuses_a_broken_image(kind, seg_data, seg_checkpoint, tmp_path, capsys):
    folder = copy_split(seg_data, tmp_path)
    culprit = folder / f"{ODD_IDS[1]}_sat.jpg"
    culprit.write_bytes(broken(kind, np.zeros((8, 8, 3), np.uint8))[0])
    out = tmp_path / "masks"
    status, _, err = run_checkpoint_cli(capsys, "segment", "predict", seg_checkpoint, folder, out, "--device", "cpu")
    assert_clean_error(status, err, culprit, kind)
    assert not out.exists()


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("side", ["pred", "gt"])
def test_segment_eval_refuses_a_broken_mask(kind, side, seg_data, tmp_path, capsys):
    folders = {"gt": copy_split(seg_data, tmp_path), "pred": tmp_path / "pred"}
    shutil.copytree(folders["gt"], folders["pred"], ignore=shutil.ignore_patterns("*_sat.jpg"))
    culprit = folders[side] / "0002_mask.png"
    culprit.write_bytes(broken(kind, np.zeros((8, 8, 3), np.uint8))[1])
    status, _, err = run_cli(capsys, "segment", "eval", "--pred", folders["pred"], "--gt", folders["gt"])
    assert_clean_error(status, err, culprit, kind)


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("which", ["_sat.jpg", "_mask.png"])
def test_segment_viz_refuses_a_broken_file(kind, which, seg_data, tmp_path, capsys):
    folder = copy_split(seg_data, tmp_path)
    culprit = folder / f"0001{which}"
    culprit.write_bytes(broken(kind, np.zeros((8, 8, 3), np.uint8))[which.endswith(".png")])
    out = tmp_path / "figures"
    status, _, err = run_cli(capsys, "segment", "viz", "--data", folder, "--pred", folder, "--out", out)
    assert_clean_error(status, err, culprit, kind)
    assert not out.exists()


# ---- classification -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory) -> Path:
    from dlcv.data.synthetic import make_classification_set

    root = tmp_path_factory.mktemp("classification")
    return make_classification_set(root, classes=3, per_class=4, size=16, seed=5, val_per_class=2)


@pytest.fixture(scope="module")
def cls_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(
        yaml.safe_dump({"workers": 0, "device": "cpu", "model": "resnet20_cifar", "batch_size": 4, "epochs": 1})
    )
    return path


@pytest.fixture(scope="module")
def cls_checkpoint(tmp_path_factory, cls_data, cls_config) -> Path:
    from dlcv.cli import main

    run = tmp_path_factory.mktemp("runs") / "resnet"
    argv = ["classify", "train", "--data", cls_data, "--out", run, "--config", cls_config, "--epochs", "1"]
    assert main([str(a) for a in argv]) == 0
    return run / "best.ckpt"


@pytest.mark.parametrize("kind", BROKEN)
def test_classify_train_refuses_a_broken_image(kind, cls_data, cls_config, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(cls_data, data)
    culprit = data / "train_50" / "1_1.png"
    culprit.write_bytes(broken(kind, np.zeros((8, 8, 3), np.uint8))[1])
    status, _, err = run_cli(
        capsys, "classify", "train", "--data", data, "--out", tmp_path / "run", "--config", cls_config
    )
    assert_clean_error(status, err, culprit, kind)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["predict", "tsne"])
@pytest.mark.parametrize("kind", BROKEN)
def test_classify_predict_and_tsne_refuse_a_broken_image(command, kind, cls_data, cls_checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    shutil.copytree(cls_data / "val_50", folder)
    culprit = folder / "2_1.png"
    culprit.write_bytes(broken(kind, np.zeros((8, 8, 3), np.uint8))[1])
    out = tmp_path / ("labels.csv" if command == "predict" else "tsne.png")
    status, _, err = run_checkpoint_cli(capsys, "classify", command, cls_checkpoint, folder, out, "--device", "cpu")
    assert_clean_error(status, err, culprit, kind)
    assert not out.exists()


def test_classify_on_unusual_modes_and_names(cls_data, cls_config, cls_checkpoint, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(cls_data, data)
    for folder in (data / "train_50", data / "val_50"):
        modes = ["L", "RGBA", "P", "I;16", "LA"]
        for number, (path, mode) in enumerate(zip(sorted(folder.glob("*.png"))[: len(modes)], modes, strict=True)):
            image = Image.open(path).convert("RGB")
            if mode == "I;16":
                Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257).save(path)
            else:
                image.convert(mode).save(path)
            if number == 0:  # a label-prefixed name with a space and non-ASCII letters
                odd = path.rename(path.with_name(f"{path.stem} été 北京.png"))
                labels = data / "val_gt.csv"
                rows = labels.read_text(encoding="utf-8").replace(f"{path.name},", f"{odd.name},")
                labels.write_text(rows, encoding="utf-8")
    status, _, err = run_cli(
        capsys, "classify", "train", "--data", data, "--out", tmp_path / "run", "--config", cls_config
    )
    assert status == 0, err

    labels = tmp_path / "labels.csv"
    status, _, err = run_checkpoint_cli(
        capsys, "classify", "predict", cls_checkpoint, data / "val_50", labels, "--device", "cpu"
    )
    assert status == 0, err
    names = sorted(p.name for p in (data / "val_50").iterdir())
    assert [line.split(",")[0] for line in labels.read_text(encoding="utf-8").splitlines()[1:]] == names
    status, _, err = run_cli(capsys, "classify", "eval", "--pred", labels, "--gt", data / "val_50")
    assert status == 0, err

    figure = tmp_path / "tsne.png"
    status, _, err = run_checkpoint_cli(
        capsys, "classify", "tsne", cls_checkpoint, data / "val_50", figure, "--device", "cpu"
    )
    assert status == 0, err
    assert figure.is_file()

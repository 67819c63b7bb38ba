"""What keeps dlcv fast, checked without timing anything: light imports, GPU layouts, compilation."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dlcv.config import ClassifyConfig, SegmentConfig
from dlcv.data.palette import NUM_KEYS, PALETTE, colour_key_image, colour_keys, count_off_palette, decode_mask
from dlcv.models import get_entry
from dlcv.predict import inference_on
from dlcv.training.classification import ClassificationTask
from dlcv.training.runner import optimise_for_device
from dlcv.training.segmentation import SegmentationTask
from tests.conftest import run_cli
from tests.test_metrics import write_crafted


def test_eval_never_imports_torch(tmp_path):
    pred_dir, gt_dir, _ = write_crafted(tmp_path)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dlcv", "segment", "eval", "--pred", pred_dir, "--gt", gt_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "numpy" in imported
    assert not imported & {"torch", "lightning", "torchvision", "matplotlib", "sklearn"}


def test_colour_keys_pack_two_to_a_byte():
    rng = np.random.default_rng(0)
    rgb = np.vstack([PALETTE, rng.integers(0, 256, size=(50, 3))]).astype(np.uint8).reshape(1, -1, 3)
    keys = colour_keys(rgb)
    assert keys.max() < NUM_KEYS
    assert np.array_equal(np.asarray(colour_key_image(Image.fromarray(rgb), NUM_KEYS)), NUM_KEYS * keys)
    assert np.array_equal(keys[0, :7], [3, 6, 5, 2, 1, 7, 0])  # the palette's own codes, none off
    assert np.array_equal(decode_mask(PALETTE.reshape(1, -1, 3))[0], np.arange(7))
    assert count_off_palette(rgb) == 50 - sum(tuple(c) in {tuple(p) for p in PALETTE.tolist()} for c in rgb[0, 7:])
    with pytest.raises(ValueError):
        colour_keys(rgb.astype(np.int64))


def test_gpu_layout_is_channels_last_and_compile_keeps_state_keys():
    task = SegmentationTask("fcn32s", 7, model_kwargs={"fc_channels": 16})
    keys = set(task.state_dict())
    precision = torch.get_float32_matmul_precision()
    try:
        optimise_for_device(task, SegmentConfig(compile=True), "gpu")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(precision)
    weight = task.model.features[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert task.model._compiled_call_impl is not None  # compiled in place, run lazily on the first step
    assert set(task.state_dict()) == keys


def test_cpu_layout_follows_the_registry():
    """On a CPU a model goes channels-last only where its registry entry says (ResNet-20 yes, FCN no)."""
    fcn = SegmentationTask("fcn32s", 7, model_kwargs={"fc_channels": 16})
    optimise_for_device(fcn, SegmentConfig(), "cpu")
    assert fcn.model.features[0].weight.is_contiguous()
    assert fcn.model._compiled_call_impl is None
    resnet = ClassificationTask("resnet20_cifar", 5)
    optimise_for_device(resnet, ClassifyConfig(model="resnet20_cifar"), "cpu")
    assert resnet.model.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert not resnet.model.stem.weight.is_contiguous()
    with inference_on(fcn, torch.device("cpu")), inference_on(resnet, torch.device("cpu")):
        assert fcn.model.features[0].weight.is_contiguous()
        assert resnet.model.stem.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("task_class", "model", "size"),
    [
        (ClassificationTask, "resnet20_cifar", 32),
        (ClassificationTask, "vgg16_bn", 32),
        (SegmentationTask, "deeplabv3plus_vgg16", 64),
    ],
)
def test_channels_last_changes_no_logits(task_class, model, size):
    """The models dlcv runs channels-last on a CPU compute there what they compute in the default layout."""
    assert get_entry(model).channels_last_on_cpu
    torch.manual_seed(0)
    task = task_class(model, 5).eval()
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        contiguous = task(images)
        task.model.to(memory_format=torch.channels_last)
        assert torch.allclose(task(images), contiguous, rtol=1e-4, atol=1e-4)


def test_compiled_training_gives_the_eager_numbers_and_plain_checkpoints(tmp_path, capsys):
    """``--compile`` (inductor, here on the CPU) changes how fast a step runs, not what it computes."""
    from dlcv.data.synthetic import make_classification_set

    data = make_classification_set(tmp_path / "data", classes=3, per_class=8, size=16, seed=2, val_per_class=2)
    histories, state_keys = [], []
    for name, flags in (("eager", []), ("compiled", ["--compile"])):
        run = tmp_path / name
        argv = ["classify", "train", "--data", data, "--model", "resnet20_cifar", "--weights", "none", "--epochs", "2"]
        status, _, err = run_cli(capsys, *argv, "--batch-size", "8", "--device", "cpu", "--out", run, *flags)
        assert status == 0, err
        with (run / "metrics.csv").open(newline="") as handle:
            histories.append([float(row["train_loss"]) for row in csv.DictReader(handle)])
        state_keys.append(torch.load(run / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"].keys())
    assert histories[1] == pytest.approx(histories[0], rel=1e-2)
    assert state_keys[1] == state_keys[0]  # no "_orig_mod." prefixes: a compiled run's weights load uncompiled

"""U-Net and DeepLabv3+ on VGG16 and ResNet encoders: shapes, weights in torchvision layout, multi-scale crops."""

import re

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import ResNet50_Weights, ResNet101_Weights, VGG16_Weights, resnet50

from dlcv.data.transforms import LandCoverAugment
from dlcv.models import build_model, get_entry, load_weights, model_names
from dlcv.models.encoders import ResNetEncoder, VGG16Encoder
from dlcv.models.fcn import vgg16_features
from tests.conftest import run_cli

NEW_MODELS = {
    "unet_vgg16": VGG16_Weights.IMAGENET1K_V1,
    "deeplabv3plus_vgg16": VGG16_Weights.IMAGENET1K_V1,
    "unet_resnet50": ResNet50_Weights.IMAGENET1K_V2,
    "deeplabv3plus_resnet50": ResNet50_Weights.IMAGENET1K_V2,
    "deeplabv3plus_resnet101": ResNet101_Weights.IMAGENET1K_V2,
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build_model(name, 7) for name in NEW_MODELS}


def test_registered_with_their_encoders_imagenet_weights():
    assert set(NEW_MODELS) <= set(model_names("segment"))
    for name, weights in NEW_MODELS.items():
        assert get_entry(name).imagenet_weights is weights


@pytest.mark.parametrize("name", list(NEW_MODELS))
def test_output_is_exactly_the_input_size(models, name):
    model = models[name].eval()
    with torch.no_grad():
        for size in [(32, 32), (37, 53), (70, 33)]:
            assert model(torch.randn(1, 3, *size)).shape == (1, 7, *size)


@pytest.mark.parametrize("name", list(NEW_MODELS))
def test_gradients_reach_the_first_encoder_layer(models, name):
    model = models[name].train()
    model.zero_grad()
    model(torch.randn(2, 3, 32, 40)).logsumexp(1).mean().backward()
    first = next(p for p in model.encoder.parameters() if p.ndim == 4)
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.decoder.modules())


def test_encoder_strides():
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        vgg = VGG16Encoder()(x)
        assert [f.shape[1:] for f in vgg] == [
            (c, 64 // s, 64 // s) for c, s in zip((64, 128, 256, 512, 512), VGG16Encoder.strides, strict=True)
        ]
        for output_stride in (32, 16):
            encoder = ResNetEncoder(50, output_stride=output_stride).eval()
            assert encoder.strides[-1] == output_stride
            assert [f.shape[-1] for f in encoder(x)] == [64 // s for s in encoder.strides]


def test_unet_decoder_balances_skips_of_any_scale():
    """VGG16 has no BatchNorm: its raw early stages must not outweigh the normalised decoder path."""
    torch.manual_seed(0)
    decoder = build_model("unet_vgg16", 7).decoder.train()
    features = [
        torch.randn(2, c, 64 // s, 64 // s).relu()
        for c, s in zip(VGG16Encoder.channels, VGG16Encoder.strides, strict=True)
    ]
    early_stages_raw = [f * scale for f, scale in zip(features, (30.0, 15.0, 1.0, 1.0, 1.0), strict=True)]
    with torch.no_grad():
        assert torch.allclose(decoder(early_stages_raw), decoder(features), atol=1e-3)


@pytest.mark.parametrize("name", ["unet_vgg16", "deeplabv3plus_vgg16"])
def test_vgg16_file_loads_into_the_encoder(tmp_path, models, name):
    reference = vgg16_features()
    state = {f"features.{k}": v.half() for k, v in reference.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 3)
    path = tmp_path / "vgg.safetensors"
    save_file(state, str(path))
    model = models[name]
    report = load_weights(model, str(path), get_entry(name))
    assert len(report.loaded) == 26 and report.unused == ["classifier.0.weight"]
    assert all(key.startswith("decoder.") for key in report.not_loaded)
    assert torch.equal(model.encoder.features[28].weight, reference[28].weight.half().float())


@pytest.mark.parametrize("name", ["unet_resnet50", "deeplabv3plus_resnet50"])
def test_torchvision_resnet_state_dict_loads_into_the_encoder(tmp_path, models, name):
    """The layout of ResNet50_Weights: every tensor but the classifier (fc) fits, dilated or not."""
    reference = resnet50()
    with torch.no_grad():
        reference.layer4[2].conv3.weight.normal_()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = models[name]
    report = load_weights(model, str(path), get_entry(name))
    assert sorted(report.unused) == ["fc.bias", "fc.weight"]
    assert all(key.startswith("decoder.") for key in report.not_loaded)
    assert torch.equal(model.encoder.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)


def test_hed_weights_load_into_the_vgg16_models(hed_weights):
    for name in ("unet_vgg16", "deeplabv3plus_vgg16"):
        report = load_weights(build_model(name, 7), str(hed_weights), get_entry(name))
        assert len(report.loaded) == 26 and not report.unused


def test_scaled_crop_zooms_within_the_image():
    for scale_range, side in (((2.0, 2.0), 16), ((1.0, 1.0), 32), ((0.5, 0.5), 40), ((0.1, 0.2), 40)):
        top, left, height, width = LandCoverAugment(32, scale_range=scale_range).windows(50, 40, 64).unbind(1)
        assert torch.allclose(height, torch.full_like(height, side)) and torch.equal(height, width), scale_range
        assert top.min() >= 0 and (top + height).max() <= 40 and left.min() >= 0 and (left + width).max() <= 64
    sides = LandCoverAugment(32, scale_range=(0.9, 2.0)).windows(2000, 40, 64)[:, 2]
    assert sides.min() >= 16 and sides.max() == pytest.approx(32 / 0.9, abs=0.5) and sides.unique().numel() > 10


def test_area_crop_keeps_its_share_and_aspect_and_fits():
    top, left, height, width = LandCoverAugment(32, min_scale=0.3).windows(2000, 40, 64).unbind(1)
    share, aspect = height * width / (40 * 64), width / height
    assert share.min() >= 0.3 - 1e-9 and share.max() > 0.8  # 40 x 53.3 is the largest 4:3 window
    assert aspect.min() >= 3 / 4 - 1e-9 and aspect.max() <= 4 / 3 + 1e-9
    assert top.min() >= 0 and (top + height).max() <= 40 + 1e-9 and (left + width).max() <= 64 + 1e-9


def test_full_windows_give_the_eight_flips_and_turns():
    torch.manual_seed(1)
    mask = torch.randint(0, 7, (8, 8))
    _, masks = LandCoverAugment(8, scale_range=(1.0, 1.0))(
        torch.zeros(64, 3, 8, 8, dtype=torch.uint8), mask.expand(64, 8, 8)
    )
    symmetries = {tuple(torch.rot90(m, k).flatten().tolist()) for m in (mask, mask.flip(-1)) for k in range(4)}
    assert {tuple(m.flatten().tolist()) for m in masks} == symmetries  # exact pixels, every one of the eight


def test_scaled_crop_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    mask = (torch.arange(64) // 8).view(64, 1).expand(64, 64).contiguous()  # 8 horizontal bands
    image = (mask * 30).to(torch.uint8).expand(3, 64, 64).contiguous()
    augment = LandCoverAugment(24, scale_range=(0.5, 2.0))
    for _ in range(20):
        out_images, out_masks = augment(image[None], mask[None])
        out_image, out_mask = out_images[0], out_masks[0]
        assert out_image.shape == (3, 24, 24) and out_mask.shape == (24, 24)
        assert set(out_mask.unique().tolist()) <= set(range(8))  # nearest: no blended labels
        exact = out_image[0] % 30 == 0  # pixels inside a band, away from a blurred edge
        assert (out_image[0][exact] // 30 == out_mask[exact]).float().mean() > 0.95


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("scale_range: [2.0, 1.0]", "scale_range"),
        ("loss: ce+focal", "loss 'ce\\+focal'"),
        ("class_weights: {grass: 2}", "unknown class"),
        ("crop_size: 0", "crop_size"),
    ],
)
def test_bad_recipe_options_are_one_line_errors(tmp_path, capsys, landcover_dir, option, message):
    config = tmp_path / "bad.yaml"
    config.write_text(option + "\n")
    out = tmp_path / "run"
    status, _, err = run_cli(
        capsys, "segment", "train", "--data", landcover_dir, "--out", out, "--config", config, "--device", "cpu"
    )
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"error: {config}: ")  # the file to fix
    assert re.search(message, err)
    assert not out.exists()


def test_strong_presets_resolve_to_valid_recipes():
    from dlcv.config import SegmentConfig, preset_path, resolve_config
    from dlcv.reproduce import experiment_for, preset_names
    from dlcv.training.losses import parse_loss

    names = [n for n in preset_names() if n.startswith("strong_") and experiment_for(n).task == "segment"]
    assert set(names) >= {"strong_deeplabv3plus_vgg16", "strong_unet_vgg16"}
    for path in (preset_path(f"{name}.yaml") for name in names):
        config = resolve_config(SegmentConfig, [path], {})
        assert get_entry(config.model, task="segment") and parse_loss(config.loss)
        low, high = config.scale_range
        assert 0 < low <= high and config.crop_size / low <= 512  # every zoom fits inside a 512 x 512 image

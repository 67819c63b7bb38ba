"""Classifiers: output shapes, VGG16 -> VGG16-BN weight mapping, describe for every registered model."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dlcv.models import build_model, get_entry, load_weights, model_names
from dlcv.models.fcn import vgg16_features
from tests.conftest import run_cli

CLASSIFIERS = model_names("classify")


def uninitialised(name: str, classes: int) -> nn.Module:
    """A model with real but uninitialised memory: skips initialising VGG16-BN's 138M parameters."""
    with torch.device("meta"):
        model = build_model(name, classes)
    return model.to_empty(device="cpu")


def test_the_issue_s_models_are_registered():
    assert {"vgg16_bn", "resnet18_cifar", "wrn16_8", "wrn28_10", "resnet18", "resnet50", "convnext_tiny"} <= set(
        CLASSIFIERS
    )


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_output_and_feature_layer_shapes(name):
    """On the meta device (no memory, no compute): logits N x classes, penultimate features N x D."""
    with torch.device("meta"):
        model = build_model(name, 50).eval()
        caught = []
        layer = dict(model.named_modules())[model.feature_layer]
        layer.register_forward_hook(lambda module, inputs, output: caught.append(output))
        logits = model(torch.zeros(3, 3, 32, 32))
    assert logits.shape == (3, 50)
    assert caught[0].flatten(1).shape[0] == 3
    if name == "vgg16_bn":
        assert caught[0].shape == (3, 256)


def test_cifar_resnet_trains_a_step():
    model = build_model("resnet18_cifar", 10)
    assert model.maxpool.__class__ is nn.Identity and model.conv1.stride == (1, 1)
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 16, 16)), torch.arange(2))
    loss.backward()
    assert torch.isfinite(loss) and model.conv1.weight.grad is not None


def test_torchvision_backbone_resizes_its_input():
    model = build_model("resnet18", 5, input_size=64)
    sizes = []
    model.net.conv1.register_forward_pre_hook(lambda module, inputs: sizes.append(inputs[0].shape[-2:]))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert sizes == [(64, 64)]


def test_plain_vgg16_convolutions_load_into_vgg16_bn_in_order(tmp_path):
    """26 tensors (13 convolutions) of torchvision's plain VGG16 layout land on VGG16-BN's convolutions."""
    reference = vgg16_features()
    state = {f"features.{k}": v.half() for k, v in reference.state_dict().items()}
    path = tmp_path / "vgg16.safetensors"
    save_file(state, str(path))
    model = uninitialised("vgg16_bn", 50)
    report = load_weights(model, str(path), get_entry("vgg16_bn"))
    assert len(report.loaded) == 26 and not report.unused
    source = [m for m in reference if isinstance(m, nn.Conv2d)]
    target = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(source) == len(target) == 13
    for plain, batch_norm in zip(source, target, strict=True):
        assert torch.equal(batch_norm.weight, plain.weight.half().float())
        assert torch.equal(batch_norm.bias, plain.bias.half().float())
    assert "features.1.weight" in report.not_loaded and "head.0.weight" in report.not_loaded


def test_torchvision_vgg16_bn_layout_loads_as_is():
    from torchvision.models import vgg16_bn

    from dlcv.models.weights import load_state

    with torch.device("meta"):
        reference = vgg16_bn()
    state = reference.to_empty(device="cpu").state_dict()
    state["features.1.running_var"] = torch.arange(64.0)
    model = uninitialised("vgg16_bn", 7)
    report = load_state(model, state, "torchvision vgg16_bn")
    assert not report.unused and sorted(report.not_loaded) == [
        "head.0.bias",
        "head.0.weight",
        "head.3.bias",
        "head.3.weight",
    ]
    assert torch.equal(model.features[1].running_var, state["features.1.running_var"])


def test_hed_weights_load_into_vgg16_bn(hed_weights):
    from safetensors.torch import load_file

    model = uninitialised("vgg16_bn", 50)
    report = load_weights(model, str(hed_weights), get_entry("vgg16_bn"))
    assert len(report.loaded) == 26 and not report.unused
    hed = load_file(str(hed_weights))
    assert torch.equal(model.features[40].weight, hed["features.28.weight"].float())  # the 13th convolution
    assert torch.equal(model.features[0].weight, hed["features.0.weight"].float())


@pytest.mark.parametrize("name", model_names())
def test_describe_every_model(name, capsys):
    """The architecture as PyTorch prints it, then total and trainable parameter counts (built on meta)."""
    with torch.device("meta"):
        status, out, err = run_cli(capsys, "describe", name, "--classes", "50")
        model = build_model(name, 50)
    assert status == 0, err
    total = sum(p.numel() for p in model.parameters())
    assert out.startswith(type(model).__name__ + "(")
    assert f"total parameters: {total:,}" in out and "trainable parameters: " in out


def test_describe_vgg16_bn_counts():
    """The report's model: 138,365,992 parameters of torchvision VGG16-BN, plus 1000*256+256 + 256*50+50."""
    with torch.device("meta"):
        model = build_model("vgg16_bn", 50)
    assert sum(p.numel() for p in model.parameters()) == 138_365_992 + 256_256 + 12_850

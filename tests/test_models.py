import pytest
import torch
from safetensors.torch import save_file

from dlcv.errors import UserError
from dlcv.models import build_model, get_entry, load_weights, model_names
from dlcv.models.fcn import bilinear_kernel, vgg16_features


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [(32, 32), (37, 53), (100, 33), (65, 64)])
def test_fcn_output_is_input_size(name, size):
    model = build_model(name, 7, fc_channels=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 7, *size)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_upsampler_reproduces_linear_ramps(factor):
    """Initialised bilinear, a transposed convolution maps a linear ramp to a finer linear ramp."""
    from dlcv.models.fcn import upsampler

    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 1, 6, 6)
    with torch.no_grad():
        out = upsampler(1, factor)(ramp)[0, 0]
    assert out.shape == (6 * factor, 6 * factor)
    interior = out[factor:-factor, factor:-factor]
    steps = interior[:, 1:] - interior[:, :-1]
    assert torch.allclose(steps, torch.full_like(steps, 1 / factor), atol=1e-5)
    assert torch.allclose(interior[:, 0], interior[0, 0].expand(interior.shape[0]))


def test_bilinear_kernel_is_separable_and_normalised():
    kernel = bilinear_kernel(2, 4)
    assert kernel[0, 1].abs().sum() == 0
    assert torch.allclose(kernel[0, 0].sum(), torch.tensor(4.0))


def test_state_dict_file_loads_and_reports(tmp_path):
    reference = vgg16_features()
    state = {f"features.{k}": v.half() for k, v in reference.state_dict().items()}
    state["classifier.6.weight"] = torch.zeros(3, 3)
    path = tmp_path / "vgg.safetensors"
    save_file(state, str(path))
    model = build_model("fcn8s", 7, fc_channels=16)
    report = load_weights(model, str(path), get_entry("fcn8s"))
    assert len(report.loaded) == 26
    assert report.unused == ["classifier.6.weight"]
    assert "fc6.weight" in report.not_loaded
    assert torch.allclose(model.features[0].weight, reference[0].weight.half().float())
    loaded, not_loaded, unused = report.summary().splitlines()
    assert loaded == f"weights: loaded 26 tensors from {path}"
    assert not_loaded.startswith(f"weights: {len(report.not_loaded)} model tensors not loaded: fc6.weight, ")
    assert unused == "weights: 1 file tensor unused: classifier.6.weight"


def test_torch_file_with_imagenet_fc_layers_reshapes_into_fc6(tmp_path):
    state = {"classifier.0.weight": torch.randn(16, 512 * 49), "classifier.0.bias": torch.randn(16)}
    path = tmp_path / "vgg.pth"
    torch.save({"state_dict": state}, path)
    model = build_model("fcn32s", 7, fc_channels=16)
    report = load_weights(model, str(path), get_entry("fcn32s"))
    assert sorted(report.loaded) == ["fc6.bias", "fc6.weight"]
    assert torch.equal(model.fc6.weight, state["classifier.0.weight"].view(16, 512, 7, 7))


def test_unusable_weights_are_user_errors(tmp_path):
    model = build_model("fcn8s", 7, fc_channels=16)
    with pytest.raises(UserError, match="no such weights file"):
        load_weights(model, str(tmp_path / "missing.pth"), get_entry("fcn8s"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"garbage\.pth"):
        load_weights(model, str(garbage), get_entry("fcn8s"))
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"x.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(UserError, match="none of its tensors fit"):
        load_weights(model, str(unrelated), get_entry("fcn8s"))


def test_hed_weights_load_into_fcn(hed_weights):
    model = build_model("fcn8s", 7, fc_channels=16)
    report = load_weights(model, str(hed_weights), get_entry("fcn8s"))
    assert len(report.loaded) == 26 and not report.unused


def test_registry_knows_the_segmentation_family():
    assert {"fcn32s", "fcn16s", "fcn8s"} <= set(model_names("segment"))
    with pytest.raises(UserError, match="unknown model"):
        get_entry("nope")

"""Option checks in ``resolve_config``: a bad value's error names the flag or the file it came from."""

import pytest

from dlcv.config import ClassifyConfig, SegmentConfig, resolve_config
from dlcv.errors import UserError


@pytest.mark.parametrize(
    ("cls", "in_file", "flags", "expected"),
    [
        (SegmentConfig, "scale_range: [2.0, 1.0]\n", {}, "{file}: scale_range must be two zoom factors"),
        (SegmentConfig, "", {"scale_range": [2.0, 1.0]}, "--scale-range: scale_range must be two zoom factors"),
        (SegmentConfig, "crop_size: 0\n", {"epochs": 3}, "{file}: crop_size must be a positive integer, not 0"),
        (SegmentConfig, "loss: ce\n", {"loss": "ce+focal"}, "--loss: loss 'ce+focal': use one or more of"),
        (SegmentConfig, "", {"class_weights": {"cloud": 2.0}}, "--class-weights: class_weights: unknown class"),
        (SegmentConfig, "epochs: 0\n", {}, "{file}: epochs must be a positive integer, not 0"),
        (SegmentConfig, "seed: -1\n", {"seed": 2**32}, "--seed: seed must be an integer in 0 .. 4294967295"),
        (ClassifyConfig, "ema: 1.5\n", {}, "{file}: ema 1.5: must lie in [0, 1)"),
        (ClassifyConfig, "", {"policy": "autoaugment"}, "--policy: policy 'autoaugment': choose none"),
        (ClassifyConfig, "crop_padding: 2.5\n", {}, "{file}: crop_padding 2.5: must be a whole number"),
        (SegmentConfig, "optimizer: adam\n", {}, "{file}: optimizer 'adam': choose adamw, sgd"),
        (ClassifyConfig, "schedule: step\n", {}, "{file}: schedule 'step': choose cosine, poly, constant"),
        (SegmentConfig, "", {"precision": "bogus"}, "--precision: precision 'bogus': choose auto, 32-true"),
        (SegmentConfig, "device: tpu\n", {}, "{file}: device 'tpu': choose auto, cpu, cuda"),
        (SegmentConfig, "", {"lr": -0.1}, "--lr: lr must be a number, 0 or more, not -0.1"),
        (ClassifyConfig, "weight_decay: -0.1\n", {}, "{file}: weight_decay must be a number, 0 or more"),
        (SegmentConfig, "warmup_epochs: one\n", {}, "{file}: warmup_epochs must be a number, 0 or more"),
        (SegmentConfig, "", {"image_size": 0}, "--image-size: image_size must be a positive integer (or unset)"),
        (ClassifyConfig, "limit_train: 0\n", {}, "{file}: limit_train must be a positive integer (or unset)"),
        (SegmentConfig, "", {"limit_val": -3}, "--limit-val: limit_val must be a positive integer (or unset)"),
        (SegmentConfig, "workers: -1\n", {}, "{file}: workers must be 0 or a positive integer"),
        (SegmentConfig, "min_scale: 0\n", {}, "{file}: min_scale must lie in (0, 1], not 0"),
        (ClassifyConfig, "model_kwargs: [1, 2]\n", {}, "{file}: model_kwargs must be a mapping"),
        (SegmentConfig, "lr: .nan\n", {}, "{file}: lr must be a number, 0 or more, not nan"),
        (SegmentConfig, "", {"warmup_epochs": float("inf")}, "--warmup-epochs: warmup_epochs must be a number, 0 or"),
        (SegmentConfig, "model_kwargs: {fc_channels: -1}\n", {}, "{file}: model_kwargs {{'fc_channels': -1}}: model"),
        (
            SegmentConfig,
            "model: unet_vgg16\nmodel_kwargs: {fc_channels: 8}\n",
            {},
            "{file}: model_kwargs {{'fc_channels': 8}}: model",
        ),
        (
            SegmentConfig,
            "model: deeplabv3plus_vgg16\n",
            {"batch_size": 1},
            "--batch-size: batch_size 1: model 'deeplabv3plus_vgg16' trains on batches of 2 or more",
        ),
    ],
)
def test_a_bad_option_names_its_source(tmp_path, cls, in_file, flags, expected):
    config_file = tmp_path / "recipe.yaml"
    config_file.write_text(in_file)
    with pytest.raises(UserError) as raised:
        resolve_config(cls, [config_file], flags)
    assert str(raised.value).startswith(expected.format(file=config_file))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "32", "bf16", 32, 16])
def test_lightning_precisions_and_their_aliases_pass(tmp_path, precision):
    config_file = tmp_path / "recipe.yaml"
    config_file.write_text(f"precision: {precision}\n")  # a bare 32 reads as a number
    assert str(resolve_config(SegmentConfig, [config_file], {}).precision) == str(precision)


def test_a_flag_corrects_a_bad_value_in_the_file(tmp_path):
    config_file = tmp_path / "recipe.yaml"
    config_file.write_text("scale_range: [2.0, 1.0]\nloss: ce+focal\n")
    config = resolve_config(SegmentConfig, [config_file], {"scale_range": [1.0, 1.0], "loss": "ce+dice", "lr": None})
    assert (config.zoom_range(), config.loss) == ((1.0, 1.0), "ce+dice")


def test_files_layer_in_turn_and_the_last_to_set_a_value_answers_for_it(tmp_path):
    base, overlay = tmp_path / "base.yaml", tmp_path / "overlay.yaml"
    base.write_text("loss: ce+focal\nepochs: 0\n")
    overlay.write_text("loss: ce+dice\nscale_range: [2.0, 1.0]\n")
    with pytest.raises(UserError) as raised:  # the overlay mends the base's loss; the base's epochs stay bad
        resolve_config(SegmentConfig, [base, overlay], {})
    assert str(raised.value).startswith(f"{base}: epochs must be a positive integer")
    with pytest.raises(UserError) as raised:
        resolve_config(SegmentConfig, [base, overlay], {"epochs": 2})
    assert str(raised.value).startswith(f"{overlay}: scale_range must be two zoom factors")
    config = resolve_config(SegmentConfig, [base, overlay], {"epochs": 2, "scale_range": [1.0, 1.0]})
    assert (config.loss, config.epochs) == ("ce+dice", 2)


@pytest.mark.parametrize(("task", "cls"), [("segment", SegmentConfig), ("classify", ClassifyConfig)])
def test_the_defaults_train_help_shows_are_those_a_run_without_the_flag_gets(task, cls):
    import argparse
    import re

    from dlcv.cli import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    train = subcommands(subcommands(build_parser())[task])["train"]
    resolved = resolve_config(cls, [], {})
    shown = {
        action.dest: found.group(1)
        for action in train._actions
        if action.help and (found := re.search(r"\(default ([^):]+)\)", action.help))
    }
    assert {"epochs", "lr", "batch_size", "optimizer", "schedule", "model"} <= set(shown)
    assert shown == {name: str(getattr(resolved, name)) for name in shown}

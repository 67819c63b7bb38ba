"""Training configurations: defaults < ``--config FILE.yaml`` (each in turn) < command-line flags.

Every run folder keeps its resolved configuration as ``config.yaml``, so any run can be repeated
with ``--config RUN_DIR/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dlcv.errors import OptionError, UserError

CONFIG_NAME = "config.yaml"
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly", "constant")
DEVICES = ("auto", "cpu", "cuda")
# Lightning's precisions and their short aliases; auto: bf16-mixed on a GPU, 32-true on a CPU.
PRECISIONS = (
    *("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"),
    *("transformer-engine", "transformer-engine-float16", "32", "16", "bf16", "64"),
)


@dataclass
class TrainConfig:
    """What every training run needs, whatever the task."""

    data: str = ""
    out: str = ""
    model: str = ""
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    schedule: str = "cosine"  # cosine | poly | constant
    warmup_epochs: float = 0.0
    weights: str = "none"  # none | imagenet | PATH
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    devices: int = 1
    num_nodes: int = 1
    precision: str = "auto"  # one of PRECISIONS
    deterministic: bool = False
    compile: bool = False  # torch.compile the model: a minute's start, then faster steps (worth it on a GPU)
    workers: int = 2  # processes that decode the data set once, at load
    image_size: int | None = None  # resize to a square once at load; None keeps the native size
    limit_train: int | None = None  # use only N training items (quick runs)
    limit_val: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse a bad option value (an :class:`OptionError` naming the option) before any data is read."""
        for name in ("epochs", "batch_size", "devices", "num_nodes"):
            if not _is_int(getattr(self, name), low=1):
                raise OptionError(name, f"{name} must be a positive integer, not {getattr(self, name)!r}")
        for name in ("image_size", "limit_train", "limit_val"):
            value = getattr(self, name)
            if value is not None and not _is_int(value, low=1):
                raise OptionError(name, f"{name} must be a positive integer (or unset), not {value!r}")
        if not _is_int(self.workers, low=0):
            raise OptionError("workers", f"workers must be 0 or a positive integer, not {self.workers!r}")
        if not _is_int(self.seed, low=0) or self.seed >= 2**32:
            raise OptionError("seed", f"seed must be an integer in 0 .. 4294967295, not {self.seed!r}")
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("device", DEVICES),
            ("precision", PRECISIONS),
        ):
            if str(getattr(self, name)) not in choices:  # str: YAML reads precision 32 as a number
                raise OptionError(name, f"{name} {getattr(self, name)!r}: choose {', '.join(choices)}")
        for name in ("lr", "weight_decay", "warmup_epochs"):  # lr 0: the weights stay as loaded
            if not _is_number(getattr(self, name)) or not 0 <= getattr(self, name) < math.inf:
                raise OptionError(name, f"{name} must be a number, 0 or more, not {getattr(self, name)!r}")
        self._check_model()

    def _check_model(self) -> None:
        """The options the model itself must accept: its keyword arguments, the batch size it trains on."""
        from dlcv.models import get_entry
        from dlcv.models.registry import check_model_kwargs

        entry = get_entry(self.model)
        if not isinstance(self.model_kwargs, dict):
            raise OptionError(
                "model_kwargs", f"model_kwargs must be a mapping of argument: value, not {self.model_kwargs!r}"
            )
        if self.batch_size < entry.min_batch_size:
            message = f"batch_size {self.batch_size}: model {entry.name!r} trains on batches of {entry.min_batch_size}"
            raise OptionError("batch_size", f"{message} or more")
        check_model_kwargs(entry, self.model_kwargs)


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class SegmentConfig(TrainConfig):
    model: str = "fcn8s"
    epochs: int = 30
    batch_size: int = 8
    optimizer: str = "sgd"  # the FCN recipe: SGD with momentum under a poly schedule
    lr: float = 1e-2
    weight_decay: float = 5e-4
    schedule: str = "poly"
    min_scale: float = 0.25  # random scale-and-crop keeps at least this fraction of the area
    # Multi-scale training: zoom each crop by a factor drawn log-uniformly from [low, high] (1 = the
    # loaded resolution); crops stay inside the image. None: the min_scale crop above.
    scale_range: list[float] | None = None
    crop_size: int | None = None  # training crop side; None: image_size, else the smallest image side
    loss: str = "ce"  # ce | dice | lovasz | lovasz_image, or a sum such as ce+lovasz
    class_weights: list[float] | dict[str, float] | None = None  # 7 numbers, or {rangeland: 2.0} (others 1)
    snapshot_ids: list[str] = field(default_factory=lambda: ["0010", "0097", "0107"])

    def zoom_range(self) -> tuple[float, float] | None:
        """``scale_range``, checked: two positive zoom factors, low first (None: no multi-scale)."""
        values = self.scale_range
        if values is None:
            return None
        numbers = isinstance(values, list | tuple) and all(isinstance(v, int | float) for v in values)
        if not numbers or len(values) != 2 or not 0 < values[0] <= values[1]:
            raise OptionError(
                "scale_range", f"scale_range must be two zoom factors [low, high] with 0 < low <= high, not {values!r}"
            )
        return float(values[0]), float(values[1])

    def check(self) -> None:
        # The loss terms and class names live beside their code; importing them here costs nothing extra,
        # since only a run about to train checks its options.
        from dlcv.data.palette import CLASS_NAMES
        from dlcv.training.losses import class_weight_vector, parse_loss

        super().check()
        if not _is_number(self.min_scale) or not 0 < self.min_scale <= 1:
            raise OptionError("min_scale", f"min_scale must lie in (0, 1], not {self.min_scale!r}")
        self.zoom_range()
        if self.crop_size is not None and (not isinstance(self.crop_size, int) or self.crop_size < 1):
            raise OptionError("crop_size", f"crop_size must be a positive integer, not {self.crop_size!r}")
        parse_loss(self.loss)
        class_weight_vector(self.class_weights, CLASS_NAMES)


@dataclass
class ClassifyConfig(TrainConfig):
    """Defaults: a CIFAR-style ResNet from scratch (SGD, cosine with warm-up, label smoothing)."""

    model: str = "resnet18_cifar"
    epochs: int = 30
    batch_size: int = 128  # per device
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    crop_padding: int = 4  # random crop from the zero-padded image; 0 turns it off
    flip: bool = True  # random left-right flips
    policy: str = "none"  # none | trivialaugment | randaugment
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0 is off
    cutmix: float = 0.0  # Beta(alpha, alpha) of cutmix; 0 is off (with both on, one of the two per batch)
    label_smoothing: float = 0.1
    ema: float = 0.0  # decay of an exponential moving average of the weights (e.g. 0.999); 0 is off

    def check(self) -> None:
        from dlcv.data.batch_augment import POLICIES

        super().check()
        if self.policy not in POLICIES:
            raise OptionError("policy", f"policy {self.policy!r}: choose {', '.join(POLICIES)}")
        for name, high, high_open in (
            ("mixup", float("inf"), False),
            ("cutmix", float("inf"), False),
            ("label_smoothing", 1, True),
            ("ema", 1, True),
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not (0 <= value < high if high_open else 0 <= value <= high):
                raise OptionError(name, f"{name} {value!r}: must lie in [0, {high}{')' if high_open else ']'}")
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            message = f"crop_padding {self.crop_padding!r}: must be a whole number of pixels, 0 or more"
            raise OptionError("crop_padding", message)


C = TypeVar("C", bound=TrainConfig)


def preset_path(name: str) -> Path:
    """A file of the experiment presets shipped with dlcv (``dlcv/configs``)."""
    return Path(str(files("dlcv") / "configs" / name))


def config_file_path(name: str | Path) -> Path:
    """``--config``'s file: ``name`` where such a file exists, else the shipped preset of that name
    (``report_fcn8s`` or ``report_fcn8s.yaml``), so that presets work from any folder."""
    path = Path(name)
    if path.exists() or path.parent != Path("."):
        return path
    preset = preset_path(f"{path.name.removesuffix('.yaml')}.yaml")
    return preset if preset.is_file() else path


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not a readable YAML config ({str(exc).splitlines()[0][:120]})") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UserError(f"{path}: a config must be a mapping of option: value")
    return content


def resolve_config(cls: type[C], config_files: Sequence[str | Path], overrides: dict[str, Any]) -> C:
    """Defaults of ``cls``, then each YAML file in turn (a later file wins), then ``overrides`` (flags actually given).

    The result is checked; a bad value's error names where it came from: the flag, or the last file that set it.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for config_file in config_files:
        from_file = read_yaml(config_file_path(config_file))
        unknown = sorted(set(from_file) - known)
        if unknown:
            raise UserError(f"{config_file}: unknown option(s) {', '.join(unknown)} for this command")
        values |= from_file
        sources |= dict.fromkeys(from_file, str(config_file))
    given = {k: v for k, v in overrides.items() if v is not None}
    values |= given
    sources |= {name: f"--{name.replace('_', '-')}" for name in given}
    config = cls(**values)
    try:
        config.check()
    except OptionError as exc:
        source = sources.get(exc.option)
        raise UserError(f"{source}: {exc}" if source else str(exc)) from None
    return config


def config_to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)

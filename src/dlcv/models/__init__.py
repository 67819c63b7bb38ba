"""Models built by name from a registry (``build_model("fcn8s", num_classes=7)``).

Importing this package registers every family; each family lives in its own module.
"""

from dlcv.models import fcn  # noqa: F401  (registers the FCN family)
from dlcv.models.describe import describe_model
from dlcv.models.registry import ModelEntry, build_model, get_entry, model_names
from dlcv.models.weights import WeightsReport, load_weights

__all__ = ["ModelEntry", "WeightsReport", "build_model", "describe_model", "get_entry", "load_weights", "model_names"]

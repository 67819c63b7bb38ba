"""Train, evaluate and explain image classifiers and land-cover segmentation models."""

__version__ = "0.1.0"

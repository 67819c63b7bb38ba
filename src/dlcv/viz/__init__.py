"""Figures that explain a model: masks side by side and overlaid, curves, t-SNE, confusion."""

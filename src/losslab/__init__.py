"""LossLab: train, instrument and compare custom loss functions."""

__version__ = "0.1.0"

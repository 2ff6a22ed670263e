"""A small 1-D convolutional network for sequences, shaped like the MNIST-1D paper's reference CNN.

Greydanus 2020 ("Scaling down Deep Learning"), `ConvBase` in the mnist1d repository: three Conv1d
layers of 25 channels with stride 2 and padding 1 (kernel sizes 5, 3, 3), ReLU after each, then one
linear layer from the flattened features to K logits. On length-40 inputs the features are 25 x 5.
Input (N, L) is read as one channel, (N, 1, L). Sizes come from the data, never typed by the user.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from losslab.models.dense import ModelConfigError


class Cnn1d(nn.Module):
    """conv0 -> act0 -> conv1 -> act1 -> conv2 -> act2 -> flatten -> out (layer names read well per layer)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        channels: int = 25,
        kernel_sizes: Sequence[int] = (5, 3, 3),
        stride: int = 2,
        padding: int = 1,
    ) -> None:
        super().__init__()
        for key, value, low in (("channels", channels, 1), ("stride", stride, 1), ("padding", padding, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ModelConfigError(f"model.{key}={value!r} is not valid; accepted: an integer >= {low}.")
        ok = not isinstance(kernel_sizes, (str, bytes)) and isinstance(kernel_sizes, Sequence)
        sizes = list(kernel_sizes) if ok else []
        if not sizes or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in sizes):
            raise ModelConfigError(
                f"model.kernel_sizes={kernel_sizes!r} is not valid; accepted: a list of integers >= 1, "
                "one per convolution (the paper's: [5, 3, 3])."
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        length, width = int(in_features), 1
        for i, k in enumerate(sizes):
            layers[f"conv{i}"] = nn.Conv1d(width, channels, k, stride=stride, padding=padding)
            layers[f"act{i}"] = nn.ReLU()
            length = (length + 2 * padding - k) // stride + 1
            width = channels
        if length < 1:
            raise ModelConfigError(
                f"model=cnn1d: inputs of length {in_features} shrink to nothing through kernels {sizes} "
                f"with stride {stride} and padding {padding}; accepted: fewer or smaller kernels, or a "
                "smaller stride."
            )
        self.features = nn.Sequential(layers)
        self.out = nn.Linear(channels * length, out_features)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x.reshape(x.shape[0], 1, -1))
        return self.out(torch.flatten(h, 1))


def cnn1d(
    in_features: int,
    out_features: int,
    channels: int = 25,
    kernel_sizes: Sequence[int] = (5, 3, 3),
    stride: int = 2,
    padding: int = 1,
) -> Cnn1d:
    """The MNIST-1D reference CNN (see the module docstring); output width K from the data."""
    return Cnn1d(in_features, out_features, channels, kernel_sizes, stride, padding)

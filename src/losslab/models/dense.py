"""Models. Input and output sizes are passed in from the data, never typed by the user."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


class ModelConfigError(ValueError):
    """A model option has a value the builder cannot use."""


def linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    """The seed's model: a single nn.Linear."""
    return nn.Linear(in_features, out_features, bias=bias)


def mlp(
    in_features: int,
    out_features: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """A multilayer perceptron; layers are named `fc0`, `act0`, ..., `out` so per-layer metrics read well."""
    if activation not in ACTIVATIONS:
        raise ModelConfigError(
            f"model.activation={activation!r} is not known; accepted: {', '.join(ACTIVATIONS)}."
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelConfigError(f"model.dropout={dropout!r} is not valid; accepted: a number in [0, 1).")
    ok = not isinstance(hidden, (str, bytes)) and isinstance(hidden, Sequence)
    sizes = [h for h in hidden] if ok else []
    if not ok or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes):
        raise ModelConfigError(f"model.hidden={hidden!r} is not valid; accepted: a list of integers >= 1.")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_features
    for i, h in enumerate(sizes):
        layers[f"fc{i}"] = nn.Linear(width, h)
        layers[f"act{i}"] = ACTIVATIONS[activation]()
        if dropout:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        width = h
    layers["out"] = nn.Linear(width, out_features)
    return nn.Sequential(layers)

"""Datasets as tensors, and minibatches sliced from them.

Every builder returns a `TensorData`: train/validation tensors plus what the model and
the loss need to know (input/output sizes, label encoding). Batches are slices of
tensors already on the training device, shuffled once per epoch with one `randperm`:
a per-sample Dataset/collate path costs more than the model step for these sizes.

Builders draw from torch's global RNG, which the task seeds once, so the seed's own
recipe (data first, then the model) is reproduced exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

LABEL_ENCODINGS = ("real", "pm1", "01")


class DataConfigError(ValueError):
    """A data option has a value the builder cannot use."""


@dataclass(frozen=True)
class TensorData:
    """A train/validation split held as tensors."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    labels: str = "real"  # one of LABEL_ENCODINGS
    w_train: Tensor | None = None
    w_val: Tensor | None = None
    batch_size: int | None = None  # None: full batch

    @property
    def in_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def out_features(self) -> int:
        return 1 if self.y_train.dim() == 1 else int(self.y_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def to(self, device: torch.device | str) -> TensorData:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            x_train=mv(self.x_train),
            y_train=mv(self.y_train),
            x_val=mv(self.x_val),
            y_val=mv(self.y_val),
            w_train=mv(self.w_train),
            w_val=mv(self.w_val),
        )

    def train_batches(self) -> TensorBatches:
        return TensorBatches(self.x_train, self.y_train, self.w_train, self.batch_size, shuffle=True)

    def val_batches(self) -> TensorBatches:
        return TensorBatches(self.x_val, self.y_val, self.w_val, self.batch_size, shuffle=False)


class TensorBatches:
    """An iterable of (x, y, w) minibatches sliced from tensors; reshuffled every epoch.

    Full-batch mode (batch_size None or >= n) yields the same tensors each epoch, in order,
    as the seed's loops do.
    """

    def __init__(self, x: Tensor, y: Tensor, w: Tensor | None, batch_size: int | None, shuffle: bool) -> None:
        self.x, self.y, self.w = x, y, w
        n = x.shape[0]
        self.batch_size = n if batch_size is None or batch_size >= n else int(batch_size)
        self.shuffle = shuffle and self.batch_size < n

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        x, y, w = self.x, self.y, self.w
        if self.shuffle:
            perm = torch.randperm(x.shape[0], device=x.device)
            x, y = x[perm], y[perm]
            w = None if w is None else w[perm]
        # one split per tensor makes every batch's view at once, instead of three slices per step
        xs, ys = x.split(self.batch_size), y.split(self.batch_size)
        ws = w.split(self.batch_size) if w is not None else (None,) * len(xs)
        yield from zip(xs, ys, ws, strict=True)


# ----------------------------------------------------------------------------- helpers


def _check(name: str, key: str, ok: bool, value: object, accepted: str) -> None:
    if not ok:
        raise DataConfigError(f"data={name}: {key}={value!r} is not valid; accepted: {accepted}.")


def _encode_binary(y01: Tensor, labels: str, name: str) -> Tensor:
    _check(name, "labels", labels in ("pm1", "01"), labels, "pm1 ({-1,+1}) or 01 ({0,1})")
    return y01 * 2.0 - 1.0 if labels == "pm1" else y01


def _split(
    name: str,
    x: Tensor,
    y: Tensor,
    w: Tensor | None,
    *,
    labels: str,
    val_fraction: float,
    batch_size: int | None,
    standardize: bool,
) -> TensorData:
    """Shuffle, split off a validation set and standardise with training statistics only."""
    _check(name, "val_fraction", 0.0 <= val_fraction < 1.0, val_fraction, "a number in [0, 1)")
    _check(
        name, "batch_size", batch_size is None or int(batch_size) >= 1, batch_size, "null or an integer >= 1"
    )
    n = x.shape[0]
    n_val = round(n * val_fraction)
    if n_val == 0:
        # No held-out data (the seed's tiny sets): validation reports the training loss.
        x_tr, y_tr, w_tr, x_va, y_va, w_va = x, y, w, x, y, w
    else:
        perm = torch.randperm(n)
        tr, va = perm[n_val:], perm[:n_val]
        x_tr, y_tr, x_va, y_va = x[tr], y[tr], x[va], y[va]
        w_tr, w_va = (None, None) if w is None else (w[tr], w[va])
    if standardize:
        mu, sd = x_tr.mean(0, keepdim=True), x_tr.std(0, keepdim=True).clamp_min(1e-8)
        x_tr, x_va = (x_tr - mu) / sd, (x_va - mu) / sd
    return TensorData(
        name=name,
        x_train=x_tr.float(),
        y_train=y_tr.float(),
        x_val=x_va.float(),
        y_val=y_va.float(),
        labels=labels,
        w_train=None if w_tr is None else w_tr.float(),
        w_val=None if w_va is None else w_va.float(),
        batch_size=None if batch_size is None else int(batch_size),
    )


#: the seed document's weights list (its example 1), tiled over samples by `weights=seed_list`
SEED_WEIGHTS = (1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0, 2.0, 1.0, 1.0)
WEIGHT_SCHEMES = ("none", "uniform", "seed_list", "noise_inverse")


def sample_weights(
    scheme: str, x: Tensor, y: Tensor, name: str, sigma: Tensor | None = None, k: int = 20
) -> Tensor | None:
    """Per-sample weights for weighted losses, normalised to mean 1.

    noise_inverse: 1 / sigma_i^2 where the noise is known (synthetic sets); on real data the
    local noise variance is estimated as the mean squared residual of a linear fit over each
    sample's k nearest neighbours.
    """
    n = x.shape[0]
    if scheme == "none":
        return None
    if scheme == "uniform":
        return torch.ones(n)
    if scheme == "seed_list":
        w = torch.tensor(SEED_WEIGHTS).repeat(math.ceil(n / len(SEED_WEIGHTS)))[:n]
    else:
        if sigma is None:
            design = torch.cat([x, torch.ones(n, 1)], dim=1).double()
            coef = torch.linalg.lstsq(design, y.double()).solution
            resid2 = ((design @ coef - y.double()) ** 2).reshape(-1)
            nearest = torch.cdist(x.double(), x.double()).topk(min(k, n), largest=False).indices
            var = resid2[nearest].mean(dim=1).float()
        else:
            var = sigma.reshape(-1) ** 2
        w = 1.0 / var.clamp_min(1e-6)
    return w / w.mean()


# ----------------------------------------------------------------------------- builders


def seed_noise(
    n_samples: int = 10,
    n_features: int = 1,
    task: str = "regression",
    labels: str = "pm1",
    batch_size: int | None = None,
    val_fraction: float = 0.0,
    name: str = "seed",
) -> TensorData:
    """The seed document's sets, built as it builds them: X ~ N(0, 1), targets pure noise.

    Targets are independent of the inputs (regression: y ~ N(0, 1); binary:
    randint(0, 2) * 2 - 1), so no model can learn them; they are kept for faithful
    reproduction of the seed's examples, not as a benchmark. Full batch, no split.
    """
    _check(name, "task", task in ("regression", "binary"), task, "regression or binary")
    x = torch.randn(n_samples, n_features)
    if task == "regression":
        y, enc = torch.randn(n_samples, 1), "real"
    else:
        y, enc = _encode_binary(torch.randint(0, 2, (n_samples, 1)).float(), labels, name), labels
    return _split(
        name, x, y, None, labels=enc, val_fraction=val_fraction, batch_size=batch_size, standardize=False
    )


def teacher_regression(
    n_samples: int = 1000,
    n_features: int = 10,
    teacher: str = "linear",
    noise: float = 0.1,
    heteroscedastic: bool = False,
    outlier_fraction: float = 0.0,
    outlier_scale: float = 10.0,
    weights: str = "none",
    val_fraction: float = 0.2,
    batch_size: int | None = 64,
    name: str = "regression",
) -> TensorData:
    """y = teacher(x) + noise, learnable; optional outliers and per-sample weights.

    teacher: `linear` (random w) or `nonlinear` (a random 1-hidden-layer tanh net).
    heteroscedastic: noise std varies per sample in [0.1, 1.9] x noise.
    weights: a scheme of `sample_weights` (none, uniform, seed_list, noise_inverse: 1 / sigma_i^2,
    outliers with their inflated sigma), returned with the data for WeightedMSE.
    """
    _check(name, "teacher", teacher in ("linear", "nonlinear"), teacher, "linear or nonlinear")
    _check(name, "noise", noise >= 0 and math.isfinite(noise), noise, "a finite number >= 0")
    _check(name, "outlier_fraction", 0 <= outlier_fraction <= 1, outlier_fraction, "a number in [0, 1]")
    _check(name, "weights", weights in WEIGHT_SCHEMES, weights, ", ".join(WEIGHT_SCHEMES))
    x = torch.randn(n_samples, n_features)
    if teacher == "linear":
        w_true = torch.randn(n_features, 1) / math.sqrt(n_features)
        f = x @ w_true
    else:
        hidden = 32
        w1 = torch.randn(n_features, hidden) / math.sqrt(n_features)
        w2 = torch.randn(hidden, 1) / math.sqrt(hidden)
        f = torch.tanh(x @ w1 * 2.0) @ w2
    sigma = torch.full((n_samples, 1), float(noise))
    if heteroscedastic:
        sigma = sigma * (0.1 + 1.8 * torch.rand(n_samples, 1))
    n_out = round(outlier_fraction * n_samples)
    if n_out:
        idx = torch.randperm(n_samples)[:n_out]
        sigma[idx] = sigma[idx].clamp_min(1e-3) * outlier_scale + outlier_scale * 0.1
    y = f + sigma * torch.randn(n_samples, 1)
    w = sample_weights(weights, x, y, name, sigma=sigma.clamp_min(1e-3))
    return _split(
        name, x, y, w, labels="real", val_fraction=val_fraction, batch_size=batch_size, standardize=True
    )


def teacher_binary(
    n_samples: int = 1000,
    n_features: int = 10,
    label_noise: float = 0.05,
    labels: str = "pm1",
    val_fraction: float = 0.2,
    batch_size: int | None = 64,
    name: str = "binary",
) -> TensorData:
    """Labels from a random linear separator, each flipped with probability `label_noise`."""
    _check(name, "label_noise", 0 <= label_noise <= 0.5, label_noise, "a number in [0, 0.5]")
    x = torch.randn(n_samples, n_features)
    w_true = torch.randn(n_features, 1)
    y01 = (x @ w_true > 0).float()
    flip = torch.rand(n_samples, 1) < label_noise
    y01 = torch.where(flip, 1.0 - y01, y01)
    y = _encode_binary(y01, labels, name)
    return _split(
        name, x, y, None, labels=labels, val_fraction=val_fraction, batch_size=batch_size, standardize=True
    )


def sklearn_dataset(
    dataset: str = "diabetes",
    labels: str = "pm1",
    val_fraction: float = 0.2,
    batch_size: int | None = 64,
    standardize_target: bool = True,
    weights: str = "none",
    name: str | None = None,
) -> TensorData:
    """Real data bundled with scikit-learn (no download): breast_cancer (binary) or diabetes.

    weights: per-sample weights for weighted losses (see `sample_weights`).
    """
    from sklearn import datasets  # local: sklearn costs import time the other builders don't need

    name = name or dataset
    loaders = {"breast_cancer": datasets.load_breast_cancer, "diabetes": datasets.load_diabetes}
    _check(name, "dataset", dataset in loaders, dataset, ", ".join(loaders))
    bunch = loaders[dataset]()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.float32).reshape(-1, 1)
    if dataset == "breast_cancer":
        y, enc = _encode_binary(y, labels, name), labels
    else:
        enc = "real"
        if standardize_target:
            y = (y - y.mean()) / y.std()
    w = sample_weights(weights, (x - x.mean(0)) / x.std(0).clamp_min(1e-8), y, name)
    return _split(
        name, x, y, w, labels=enc, val_fraction=val_fraction, batch_size=batch_size, standardize=True
    )

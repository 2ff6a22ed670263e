"""Datasets as tensors, and minibatches sliced from them.

Every builder returns a `TensorData`: train/val/test tensors plus what the model, the loss and
the task metrics need to know (input/output sizes, task, label encoding). Batches are slices of
tensors already on the training device, shuffled once per epoch with one `randperm`: a
per-sample Dataset/collate path costs more than the model step for these sizes.

Builders draw the data from torch's global RNG, which the task seeds once, so the seed's own
recipe (data first, then the model) is reproduced exactly. The train/val/test split comes from
its own generator seeded by `split_seed` (default: `seed`), see `losslab.data.splits`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from losslab.data.splits import (
    SEED_WEIGHTS,
    WEIGHT_SCHEMES,
    DataConfigError,
    check,
    check_fractions,
    sample_weights,
    three_way_split,
)

__all__ = [
    "LABEL_ENCODINGS",
    "SEED_WEIGHTS",
    "TASKS",
    "WEIGHT_SCHEMES",
    "DataConfigError",
    "TensorBatches",
    "TensorData",
    "sample_weights",
    "seed_noise",
    "sklearn_dataset",
    "teacher_binary",
    "teacher_regression",
]

LABEL_ENCODINGS = ("real", "pm1", "01", "classes")
TASKS = ("binary", "regression", "multiclass")
#: rows per validation/test batch: these data sets fit in one, so a validation is one forward pass
EVAL_BATCH = 8192


@dataclass(frozen=True)
class TensorData:
    """A train/val/test split held as tensors.

    `heldout=False` marks a set without held-out data (the seed's): val and test are the train set.
    Per-sample weights exist for the train split only: val and test losses are never weighted.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str = "regression"  # one of TASKS
    labels: str = "real"  # one of LABEL_ENCODINGS
    w_train: Tensor | None = None
    batch_size: int | None = None  # None: full batch
    heldout: bool = True
    #: K for multiclass data (labels are (N,) int64 class indices in [0, K)); None otherwise
    num_classes: int | None = None
    #: the clean labels of a split whose labels were corrupted (`data.label_noise`); None: not corrupted
    y_train_clean: Tensor | None = None
    y_val_clean: Tensor | None = None
    #: facts about the data a run logs once (data/noise_rate, data/imbalance_ratio, ...)
    data_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def in_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def out_features(self) -> int:
        """The model's output width: K logits for multiclass data, else the target's width."""
        if self.task == "multiclass" and self.num_classes is not None:
            return int(self.num_classes)
        return 1 if self.y_train.dim() == 1 else int(self.y_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def to(self, device: torch.device | str) -> TensorData:
        if self.x_train.device == torch.device(device):
            return self
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            w_train=None if self.w_train is None else self.w_train.to(device),
            y_train_clean=None if self.y_train_clean is None else self.y_train_clean.to(device),
            y_val_clean=None if self.y_val_clean is None else self.y_val_clean.to(device),
        )

    def with_labels(self, domain: str) -> TensorData:
        """Binary labels re-encoded in `domain` ('pm1' or '01'); anything else is returned as is.

        This is how one binary data set serves every binary loss: the task gives each loss its
        labels in the domain it declares, with no flag.
        """
        if self.task != "binary" or domain not in ("pm1", "01") or domain == self.labels:
            return self

        def enc(y: Tensor) -> Tensor:
            return (y + 1.0) / 2.0 if domain == "01" else y * 2.0 - 1.0

        return replace(
            self,
            y_train=enc(self.y_train),
            y_val=enc(self.y_val),
            y_test=enc(self.y_test),
            y_train_clean=None if self.y_train_clean is None else enc(self.y_train_clean),
            y_val_clean=None if self.y_val_clean is None else enc(self.y_val_clean),
            labels=domain,
        )

    def train_batches(self) -> TensorBatches:
        return TensorBatches(self.x_train, self.y_train, self.w_train, self.batch_size, shuffle=True)

    def val_batches(self) -> TensorBatches:
        return TensorBatches(self.x_val, self.y_val, None, _eval_batch(self.batch_size), shuffle=False)

    def test_batches(self) -> TensorBatches:
        return TensorBatches(self.x_test, self.y_test, None, _eval_batch(self.batch_size), shuffle=False)


def _eval_batch(batch_size: int | None) -> int | None:
    return None if batch_size is None else max(int(batch_size), EVAL_BATCH)


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


def _encode_binary(y01: Tensor, labels: str, name: str) -> Tensor:
    check(name, "labels", labels in ("pm1", "01"), labels, "pm1 ({-1,+1}) or 01 ({0,1})")
    return y01 * 2.0 - 1.0 if labels == "pm1" else y01


def _split(
    name: str,
    x: Tensor,
    y: Tensor,
    *,
    task: str,
    labels: str,
    val_fraction: float,
    test_fraction: float,
    split_seed: int | None,
    batch_size: int | None,
    standardize: bool,
    standardize_target: bool = False,
    weights: str = "none",
    sigma: Tensor | None = None,
    num_classes: int | None = None,
) -> TensorData:
    """Split three ways (stratified for binary and multiclass), standardise and weight with train
    statistics only. Multiclass labels stay (N,) int64 class indices; every other target is float32."""
    check_fractions(name, val_fraction, test_fraction)
    check(
        name, "batch_size", batch_size is None or int(batch_size) >= 1, batch_size, "null or an integer >= 1"
    )
    check(
        name,
        "split_seed",
        split_seed is None or (isinstance(split_seed, int) and not isinstance(split_seed, bool)),
        split_seed,
        "an integer (default: the run's seed)",
    )
    if val_fraction == 0:
        # No held-out data (the seed's tiny sets): val and test report the training set.
        tr = va = te = torch.arange(x.shape[0])
    else:
        strata = y if task in ("binary", "multiclass") else None
        tr, va, te = three_way_split(x.shape[0], val_fraction, test_fraction, split_seed, strata, name)
    x_tr, x_va, x_te = x[tr], x[va], x[te]
    y_tr, y_va, y_te = y[tr], y[va], y[te]
    if standardize:
        x_tr, x_va, x_te = standardized(x_tr, x_va, x_te)
    if standardize_target:
        mu, sd = y_tr.mean(), y_tr.std().clamp_min(1e-8)
        y_tr, y_va, y_te = (y_tr - mu) / sd, (y_va - mu) / sd, (y_te - mu) / sd
    w_tr = sample_weights(weights, x_tr, y_tr, name, sigma=None if sigma is None else sigma[tr])
    target = (lambda t: t.long()) if task == "multiclass" else (lambda t: t.float())
    return TensorData(
        name=name,
        x_train=x_tr.float(),
        y_train=target(y_tr),
        x_val=x_va.float(),
        y_val=target(y_va),
        x_test=x_te.float(),
        y_test=target(y_te),
        task=task,
        labels=labels,
        w_train=None if w_tr is None else w_tr.float(),
        batch_size=None if batch_size is None else int(batch_size),
        heldout=val_fraction > 0,
        num_classes=num_classes,
    )


def standardized(x_tr: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Every feature centred and scaled by train statistics; a feature constant on the train split
    is only centred (as sklearn's StandardScaler does), so a pixel that is always 0 in train does
    not blow up in val or test."""
    mu, sd = x_tr.mean(0, keepdim=True), x_tr.std(0, keepdim=True)
    sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))
    return tuple((x - mu) / sd for x in (x_tr, *others))


# ----------------------------------------------------------------------------- builders


def seed_noise(
    n_samples: int = 10,
    n_features: int = 1,
    task: str = "regression",
    labels: str = "pm1",
    batch_size: int | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    split_seed: int | None = None,
    name: str = "seed",
) -> TensorData:
    """The seed document's sets, built as it builds them: X ~ N(0, 1), targets pure noise.

    Targets are independent of the inputs (regression: y ~ N(0, 1); binary:
    randint(0, 2) * 2 - 1), so no model can learn them; they are kept for faithful
    reproduction of the seed's examples, not as a benchmark. Full batch, no split.
    """
    check(name, "task", task in ("regression", "binary"), task, "regression or binary")
    x = torch.randn(n_samples, n_features)
    if task == "regression":
        y, enc = torch.randn(n_samples, 1), "real"
    else:
        y, enc = _encode_binary(torch.randint(0, 2, (n_samples, 1)).float(), labels, name), labels
    return _split(
        name,
        x,
        y,
        task=task,
        labels=enc,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        batch_size=batch_size,
        standardize=False,
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
    test_fraction: float = 0.2,
    split_seed: int | None = None,
    batch_size: int | None = 64,
    name: str = "regression",
    task: str = "regression",
) -> TensorData:
    """y = teacher(x) + noise, learnable; optional outliers and per-sample weights.

    teacher: `linear` (random w) or `nonlinear` (a random 1-hidden-layer tanh net).
    heteroscedastic: noise std varies per sample in [0.1, 1.9] x noise.
    weights: a scheme of `sample_weights` (none, uniform, seed_list, noise_inverse: 1 / sigma_i^2,
    outliers with their inflated sigma), train split only, for WeightedMSE.
    Outliers are in every split: robust losses are judged on data like the data they train on.
    """
    check(name, "task", task == "regression", task, "regression (this builder's task)")
    check(name, "teacher", teacher in ("linear", "nonlinear"), teacher, "linear or nonlinear")
    check(name, "noise", noise >= 0 and math.isfinite(noise), noise, "a finite number >= 0")
    check(name, "outlier_fraction", 0 <= outlier_fraction <= 1, outlier_fraction, "a number in [0, 1]")
    check(name, "weights", weights in WEIGHT_SCHEMES, weights, ", ".join(WEIGHT_SCHEMES))
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
    return _split(
        name,
        x,
        y,
        task="regression",
        labels="real",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        batch_size=batch_size,
        standardize=True,
        weights=weights,
        sigma=sigma.clamp_min(1e-3),
    )


def teacher_binary(
    n_samples: int = 1000,
    n_features: int = 10,
    flip_rate: float = 0.05,
    labels: str = "pm1",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int | None = None,
    batch_size: int | None = 64,
    name: str = "binary",
    task: str = "binary",
) -> TensorData:
    """Labels from a random linear separator, each flipped with probability `flip_rate` in every split
    (the task's own noise; `data.label_noise` corrupts the training labels only, see data/corruption.py)."""
    check(name, "task", task == "binary", task, "binary (this builder's task)")
    check(name, "flip_rate", 0 <= flip_rate <= 0.5, flip_rate, "a number in [0, 0.5]")
    x = torch.randn(n_samples, n_features)
    w_true = torch.randn(n_features, 1)
    y01 = (x @ w_true > 0).float()
    flip = torch.rand(n_samples, 1) < flip_rate
    y01 = torch.where(flip, 1.0 - y01, y01)
    y = _encode_binary(y01, labels, name)
    return _split(
        name,
        x,
        y,
        task="binary",
        labels=labels,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        batch_size=batch_size,
        standardize=True,
    )


def sklearn_dataset(
    dataset: str = "diabetes",
    labels: str = "pm1",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int | None = None,
    batch_size: int | None = 64,
    standardize_target: bool = True,
    weights: str = "none",
    name: str | None = None,
    task: str | None = None,
) -> TensorData:
    """Real data bundled with scikit-learn (no download): breast_cancer (binary) or diabetes.

    weights: per-sample training weights for weighted losses (see `sample_weights`), estimated
    on the train split. The diabetes target is standardised with train statistics.
    """
    from sklearn import datasets  # local: sklearn costs import time the other builders don't need

    name = name or dataset
    loaders = {"breast_cancer": datasets.load_breast_cancer, "diabetes": datasets.load_diabetes}
    check(name, "dataset", dataset in loaders, dataset, ", ".join(loaders))
    check(name, "weights", weights in WEIGHT_SCHEMES, weights, ", ".join(WEIGHT_SCHEMES))
    bunch = loaders[dataset]()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.float32).reshape(-1, 1)
    binary = dataset == "breast_cancer"
    own = "binary" if binary else "regression"
    check(name, "task", task in (None, own), task, f"{own} (the task of dataset={dataset})")
    if binary:
        y = _encode_binary(y, labels, name)
    return _split(
        name,
        x,
        y,
        task=own,
        labels=labels if binary else "real",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        batch_size=batch_size,
        standardize=True,
        standardize_target=standardize_target and not binary,
        weights="none" if binary else weights,
    )


def like_weights(model: nn.Module, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Tensors on the weights' device, floating ones in their dtype, as Lightning's precision plugin
    hands batches to training_step: for code that runs the model outside the loop on the (CPU) data."""
    param = next(model.parameters(), None)
    if param is None:
        return tensors
    return tuple(
        t.to(param.device, param.dtype) if t.is_floating_point() else t.to(param.device) for t in tensors
    )

"""Train / val / test index splits and the per-sample weights estimated on the train split.

Hand-written rather than sklearn's `train_test_split`: the split must come from its own torch
generator seeded by `split_seed` (so designs run with the same seed see the same rows, whatever
the model or loss drew from the global RNG), and must stay a pure index computation on tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class DataConfigError(ValueError):
    """A data option has a value the builder cannot use."""


def check(name: str, key: str, ok: bool, value: object, accepted: str) -> None:
    if not ok:
        raise DataConfigError(f"data={name}: {key}={value!r} is not valid; accepted: {accepted}.")


def check_fractions(name: str, val_fraction: float, test_fraction: float) -> None:
    """Both zero (no held-out data, val = test = train) or both > 0 with room left for training."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0
        check(name, key, ok, value, "a number in [0, 1)")
    check(
        name,
        "test_fraction",
        (val_fraction == 0) == (test_fraction == 0),
        test_fraction,
        f"0 together with val_fraction=0 (no held-out data), or > 0 when val_fraction={val_fraction} > 0",
    )
    check(
        name,
        "val_fraction + test_fraction",
        val_fraction + test_fraction < 1.0,
        val_fraction + test_fraction,
        "a sum below 1, so some rows are left to train on",
    )


#: rows every split needs: val and test metrics such as r2 and the AUC are undefined on one row
MIN_ROWS = 2


def check_split_sizes(name: str, train: int, val: int, test: int, heldout: bool = True) -> None:
    """Raise DataConfigError naming each split of fewer than MIN_ROWS rows (without held-out data, val
    and test are the train set: only train is named)."""
    sizes = {"train": train, "val": val, "test": test} if heldout else {"train": train}
    small = {split: n for split, n in sizes.items() if n < MIN_ROWS}
    if small:
        said = ", ".join(
            f"the {split} split has {n} row{'s' if n != 1 else ''}" for split, n in small.items()
        )
        raise DataConfigError(
            f"data={name}: {said} (train {train}, val {val}, test {test}); accepted: at least {MIN_ROWS} "
            "rows in each split (val and test metrics such as r2 and the AUC need two). Raise "
            "data.n_samples, or the split's fraction (data.val_fraction, data.test_fraction)."
        )


def _generator(split_seed: int | None) -> torch.Generator | None:
    if split_seed is None:
        return None  # the global RNG, as seeded by the task
    g = torch.Generator()
    g.manual_seed(int(split_seed))
    return g


def three_way_split(
    n: int,
    val_fraction: float,
    test_fraction: float,
    split_seed: int | None,
    strata: Tensor | None = None,
    name: str = "data",
) -> tuple[Tensor, Tensor, Tensor]:
    """(train, val, test) row indices; each class of `strata` is split in the same proportions.

    Per stratum, round(n_c * fraction) rows go to val and to test, the rest to train; the
    train indices are then shuffled as a whole (minibatches are reshuffled every epoch anyway).
    """
    gen = _generator(split_seed)
    groups = (
        [torch.arange(n)]
        if strata is None
        else [(strata.reshape(-1) == c).nonzero().reshape(-1) for c in torch.unique(strata.reshape(-1))]
    )
    tr, va, te = [], [], []
    for idx in groups:
        perm = idx[torch.randperm(idx.numel(), generator=gen)]
        n_va, n_te = round(idx.numel() * val_fraction), round(idx.numel() * test_fraction)
        va.append(perm[:n_va])
        te.append(perm[n_va : n_va + n_te])
        tr.append(perm[n_va + n_te :])
    train, val, test = torch.cat(tr), torch.cat(va), torch.cat(te)
    train = train[torch.randperm(train.numel(), generator=gen)]
    if val.numel() == 0 or test.numel() == 0 or train.numel() == 0:
        raise DataConfigError(
            f"data={name}: {n} samples split with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction} leave an empty split (train {train.numel()}, "
            f"val {val.numel()}, test {test.numel()}); accepted: more samples or larger fractions."
        )
    check_split_sizes(name, train.numel(), val.numel(), test.numel())
    return train, val, test


def train_val_split(
    n: int, val_fraction: float, split_seed: int | None, strata: Tensor | None = None, name: str = "data"
) -> tuple[Tensor, Tensor]:
    """(train, val) row indices of a set whose test split is given apart (MNIST-1D's own test rows);
    stratified and seeded as `three_way_split`."""
    check(name, "val_fraction", 0.0 < val_fraction < 1.0, val_fraction, "a number in (0, 1)")
    gen = _generator(split_seed)
    groups = (
        [torch.arange(n)]
        if strata is None
        else [(strata.reshape(-1) == c).nonzero().reshape(-1) for c in torch.unique(strata.reshape(-1))]
    )
    tr, va = [], []
    for idx in groups:
        perm = idx[torch.randperm(idx.numel(), generator=gen)]
        n_va = round(idx.numel() * val_fraction)
        va.append(perm[:n_va])
        tr.append(perm[n_va:])
    train, val = torch.cat(tr), torch.cat(va)
    train = train[torch.randperm(train.numel(), generator=gen)]
    if val.numel() == 0 or train.numel() == 0:
        raise DataConfigError(
            f"data={name}: {n} samples split with val_fraction={val_fraction} leave an empty split "
            f"(train {train.numel()}, val {val.numel()}); accepted: a val_fraction that leaves both "
            "non-empty."
        )
    return train, val


#: the seed document's weights list (its example 1), tiled over samples by `weights=seed_list`
SEED_WEIGHTS = (1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0, 2.0, 1.0, 1.0)
WEIGHT_SCHEMES = ("none", "uniform", "seed_list", "noise_inverse")


def sample_weights(
    scheme: str, x: Tensor, y: Tensor, name: str, sigma: Tensor | None = None, k: int = 20
) -> Tensor | None:
    """Per-sample training weights for weighted losses, normalised to mean 1.

    Called on the train split only, so no weight depends on a val or test target.
    noise_inverse: 1 / sigma_i^2 where the noise is known (synthetic sets); on real data the
    local noise variance is estimated as the mean squared residual of a linear fit over each
    sample's k nearest neighbours (within the train split).
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

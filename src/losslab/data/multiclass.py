"""Multiclass data sets that ship with a package (no download at run time): MNIST-1D and sklearn's digits.

Both give `task="multiclass"`: features float32, labels (N,) int64 class indices in [0, K), and
`num_classes` K, from which the model's output width comes (`TensorData.out_features`).

MNIST-1D (Greydanus 2020, "Scaling down Deep Learning") is generated locally with the `mnist1d`
package's `make_dataset` and its default arguments (5,000 sequences of length 40, 10 classes,
4,000 train / 1,000 test rows). Generation takes seconds, so the arrays are cached on disk, one
`.npz` file per set of generation arguments (a hash of them and of the package's version):

    $LOSSLAB_CACHE_DIR/mnist1d/<hash>.npz      when LOSSLAB_CACHE_DIR is set
    ~/.cache/losslab/mnist1d/<hash>.npz        otherwise
    <data.cache_dir>/<hash>.npz                when the data config names a folder

The features are used as the package gives them: its `make_dataset` already centres the whole set
and scales it to standard deviation 1 (the paper's only preprocessing). Val is carved from the
4,000 training rows (stratified, from `split_seed`); test is the package's own 1,000 test rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from losslab.data.datasets import TensorData, _split
from losslab.data.splits import check, train_val_split

#: environment variable naming the root of LossLab's data cache
CACHE_ENV = "LOSSLAB_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where generated data sets are cached: $LOSSLAB_CACHE_DIR/mnist1d, else ~/.cache/losslab/mnist1d."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "losslab"
    return base / "mnist1d"


@dataclass(frozen=True)
class Mnist1dArrays:
    """The generated arrays, the cache file they came from or went to, and whether it was a hit."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    path: Path
    hit: bool


def _package_args(overrides: dict[str, object]) -> tuple[object, dict[str, object]]:
    # Local import: `import mnist1d` loads matplotlib.pyplot, requests and scipy (about a second),
    # which no other data set needs and `python train.py` should not pay before a config is valid.
    from mnist1d.data import get_dataset_args
    from mnist1d.utils import ObjectView

    args = get_dataset_args(as_dict=True)
    unknown = sorted(set(overrides) - set(args))
    check("mnist1d", "generation", not unknown, unknown, ", ".join(sorted(k for k in args if k != "url")))
    args.update(overrides)
    return ObjectView(args), args


def cache_key(args: dict[str, object]) -> str:
    """A hash of the generation arguments (the download URL left out) and of the package version."""
    content = {k: v for k, v in args.items() if k != "url"}
    text = json.dumps({"args": content, "mnist1d": version("mnist1d")}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_mnist1d(cache_dir: str | Path | None = None, **overrides: object) -> Mnist1dArrays:
    """MNIST-1D's arrays from the cache, generated (and cached) on a miss; `overrides` change
    `make_dataset`'s arguments (num_samples, train_split, seed, shuffle_seq, ...)."""
    view, args = _package_args(overrides)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / f"{cache_key(args)}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
            return Mnist1dArrays(**arrays, path=path, hit=True)
        except (OSError, ValueError, KeyError):
            pass  # a truncated or foreign file: generate again and replace it
    from mnist1d.data import make_dataset

    # make_dataset reseeds numpy's and Python's global RNGs (its own seed, 42): keep the run's streams
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(view)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {
        "x": np.asarray(data["x"], dtype=np.float32),
        "y": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")  # atomic: parallel jobs may race here
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Mnist1dArrays(**arrays, path=path, hit=False)


def _check_labels(name: str, y: torch.Tensor, num_classes: int) -> None:
    ok = isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 2
    check(name, "num_classes", ok, num_classes, "an integer >= 2")
    low, high = int(y.min()), int(y.max())
    check(
        name,
        "num_classes",
        low >= 0 and high < num_classes,
        num_classes,
        f"an integer above every label (the labels run from {low} to {high})",
    )


def mnist1d(
    num_samples: int = 5000,
    train_split: float = 0.8,
    data_seed: int = 42,
    shuffle_seq: bool = False,
    val_fraction: float = 0.1,
    split_seed: int | None = None,
    batch_size: int | None = 100,
    num_classes: int = 10,
    cache_dir: str | None = None,
    name: str = "mnist1d",
    task: str = "multiclass",
) -> TensorData:
    """MNIST-1D (Greydanus 2020): 10 classes of 1-D sequences of length 40, generated by `mnist1d`.

    num_samples, train_split, data_seed (the package's `seed`) and shuffle_seq are `make_dataset`'s
    arguments (its defaults: 5,000 rows, 4,000 train / 1,000 test, seed 42, unshuffled). val_fraction
    of the train rows become val (stratified, from `split_seed`); test is the package's test split.
    The arrays are cached on disk, see the module docstring (`cache_dir` overrides the folder).
    """
    check(name, "task", task == "multiclass", task, "multiclass (this builder's task)")
    check(name, "val_fraction", 0.0 < val_fraction < 1.0, val_fraction, "a number in (0, 1)")
    arrays = load_mnist1d(
        cache_dir, num_samples=num_samples, train_split=train_split, seed=data_seed, shuffle_seq=shuffle_seq
    )
    x, y = torch.from_numpy(arrays.x), torch.from_numpy(arrays.y)
    x_te, y_te = torch.from_numpy(arrays.x_test), torch.from_numpy(arrays.y_test)
    _check_labels(name, torch.cat([y, y_te]), num_classes)
    tr, va = train_val_split(x.shape[0], val_fraction, split_seed, strata=y, name=name)
    check(
        name,
        "batch_size",
        batch_size is None or int(batch_size) >= 1,
        batch_size,
        "null or an integer >= 1",
    )
    return TensorData(
        name=name,
        x_train=x[tr].float(),
        y_train=y[tr].long(),
        x_val=x[va].float(),
        y_val=y[va].long(),
        x_test=x_te.float(),
        y_test=y_te.long(),
        task="multiclass",
        labels="classes",
        batch_size=None if batch_size is None else int(batch_size),
        num_classes=num_classes,
    )


def digits(
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int | None = None,
    batch_size: int | None = 64,
    num_classes: int = 10,
    name: str = "digits",
    task: str = "multiclass",
) -> TensorData:
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 images as 64 features, 10 classes.

    Split three ways, stratified by class, from `split_seed`; features standardised with train
    statistics (pixels constant on the train split are only centred), as the other sklearn sets.
    """
    from sklearn.datasets import load_digits  # local: sklearn costs import time other builders don't need

    check(name, "task", task == "multiclass", task, "multiclass (this builder's task)")
    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    _check_labels(name, y, num_classes)
    return _split(
        name,
        x,
        y,
        task="multiclass",
        labels="classes",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        batch_size=batch_size,
        standardize=True,
        num_classes=num_classes,
    )

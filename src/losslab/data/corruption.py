"""Label corruption and class imbalance of a classification data set's training split, as data config.

Applied by LossLab after any classification builder (its own or a user's) returned a `TensorData`,
from the keys `conf/data/classification/default.yaml` declares once for every classification set:

    data.label_noise.kind      none | symmetric | asymmetric
    data.label_noise.rate      in [0, 1): each training label's flip probability
    data.label_noise.clean_val false: val is corrupted like train (a practitioner's val is noisy too)
    data.label_noise.map       asymmetric: {from: to} class indices (null: the data's standard map)
    data.label_noise.seed      the corruption's RNG (default: data.split_seed, else seed)
    data.imbalance_ratio       >= 1: largest / smallest training class, long tail
                               n_k = n_max * ratio^(-k / (K - 1)) over class index k

Order: the training split is subsampled to the long tail first (from its clean labels), then
corrupted. Val and test keep every row (balanced as split); test labels are never changed.

Symmetric noise replaces each training label, with probability `rate`, by one of the K - 1 other
classes drawn uniformly. Asymmetric noise flips each label of a mapped class c to map[c] with
probability `rate` (Patrini et al. 2017, "Making Deep Neural Networks Robust to Label Noise: a Loss
Correction Approach": 2->7, 3->8, 5<->6, 7->1 on MNIST; here the standard map of 10-class digit data,
mnist1d and digits). Binary data (class 1 = the positive label in either encoding): symmetric flips;
asymmetric flips class 1 to class 0 unless a map says otherwise.

Determinism: every draw comes from numpy generators seeded by (data.label_noise.seed, a fixed tag per
use), never from the global RNG, so the corruption is the same for the same split seed and noise
settings whatever the model seed is. All uniforms are drawn for every row whatever the rate, so the
rows corrupted at rate 0.2 are a subset of those at 0.4 (same seed), with the same replacement classes.

The clean labels stay in `TensorData.y_train_clean` / `y_val_clean`; the realised corrupted fractions
and class counts are in `TensorData.data_metrics` (logged as `data/noise_rate`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from losslab.data.datasets import TensorData
from losslab.data.splits import DataConfigError

NOISE_KINDS = ("none", "symmetric", "asymmetric")
#: Patrini et al. 2017's class-dependent flips for MNIST (2->7, 3->8, 5<->6, 7->1)
MNIST_MAP: dict[int, int] = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
#: data sets whose standard asymmetric map is MNIST_MAP (10 classes of handwritten-style digits)
DIGIT_DATA = ("mnist1d", "digits")
#: binary data: the positive class (1) flipped to the negative one
BINARY_MAP: dict[int, int] = {1: 0}
#: the keys this module takes off the data config before the builder is called
KEYS = ("label_noise", "imbalance_ratio")
#: what `loss.class_weights` may name besides explicit weights
CLASS_WEIGHT_SCHEMES = ("inverse_frequency",)

# stream tags of the corruption's generators: one per use, so changing one use moves no other draw
_TAG_IMBALANCE, _TAG_TRAIN, _TAG_VAL = 101, 202, 303


def split_data_config(node: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """(the data config without `label_noise` and `imbalance_ratio`, those settings resolved)."""
    settings: dict[str, Any] = {}
    if not isinstance(node, DictConfig) or not any(k in node for k in KEYS):
        return node, settings
    rest = OmegaConf.create(OmegaConf.to_container(node, resolve=False))
    assert isinstance(rest, DictConfig)
    for key in KEYS:
        if key in node:
            value = OmegaConf.select(node, key, default=None)  # resolved (the seed interpolation)
            settings[key] = (
                OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            )
            rest.pop(key)
    # keep interpolations into the rest of the config (data.split_seed: ${seed}) resolvable
    if node._get_parent() is not None:
        rest._set_parent(node._get_parent())
    return rest, settings


# ----------------------------------------------------------------------------- settings


def _fail(name: str, key: str, value: object, accepted: str) -> DataConfigError:
    return DataConfigError(f"data={name}: data.{key}={value!r} is not valid; accepted: {accepted}.")


def _classes(data: TensorData) -> int:
    """K of a classification data set (2 for binary)."""
    return 2 if data.task == "binary" else int(data.num_classes or int(data.y_train.max()) + 1)


def _as_index(y: Tensor, data: TensorData) -> Tensor:
    """Labels as (N,) int64 class indices: binary labels -> 1 for the positive label, 0 otherwise."""
    if data.task == "binary":
        return (y.reshape(-1) == 1).long()
    return y.reshape(-1).long()


def _from_index(idx: Tensor, like: Tensor, data: TensorData) -> Tensor:
    """Class indices back in the stored encoding and shape of `like`."""
    if data.task == "binary":
        neg = -1.0 if data.labels == "pm1" else 0.0
        out = torch.where(idx == 1, torch.ones((), dtype=like.dtype), torch.full((), neg, dtype=like.dtype))
        return out.reshape(like.shape).to(like.dtype)
    return idx.reshape(like.shape).to(like.dtype)


def _check_task(data: TensorData, key: str, value: object) -> None:
    if data.task not in ("binary", "multiclass"):
        raise DataConfigError(
            f"data={data.name}: data.{key}={value!r} needs classification data, but data={data.name} is "
            f"{data.task} data (real-valued targets have no classes to flip or to rebalance); accepted: "
            "a binary or multiclass data set (e.g. data=mnist1d, data=digits, data=breast_cancer), or "
            f"no data.{key} setting."
        )


def _noise_settings(data: TensorData, raw: Any) -> dict[str, Any] | None:
    """The checked label-noise settings, or None when there is no corruption to do."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _fail(data.name, "label_noise", raw, "a group of kind, rate, clean_val, map, seed")
    unknown = sorted(set(raw) - {"kind", "rate", "clean_val", "map", "seed"})
    if unknown:
        raise _fail(
            data.name,
            f"label_noise.{unknown[0]}",
            raw[unknown[0]],
            "the keys kind, rate, clean_val, map, seed",
        )
    kind = raw.get("kind", "none")
    if kind not in NOISE_KINDS:
        raise _fail(data.name, "label_noise.kind", kind, " | ".join(NOISE_KINDS))
    rate = raw.get("rate", 0.0)
    ok = (
        isinstance(rate, (int, float))
        and not isinstance(rate, bool)
        and math.isfinite(rate)
        and 0 <= rate < 1
    )
    if not ok:
        raise _fail(
            data.name,
            "label_noise.rate",
            rate,
            "a number in [0, 1) (the probability that a training label is flipped; 1 leaves no clean label)",
        )
    if kind == "none":
        if rate:
            raise _fail(
                data.name,
                "label_noise.rate",
                rate,
                "0 while data.label_noise.kind=none; set data.label_noise.kind=symmetric or asymmetric",
            )
        return None
    _check_task(data, "label_noise.kind", kind)
    clean_val = raw.get("clean_val", False)
    if not isinstance(clean_val, bool):
        raise _fail(data.name, "label_noise.clean_val", clean_val, "true or false")
    seed = raw.get("seed")
    if seed is None:
        seed = 0
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _fail(data.name, "label_noise.seed", seed, "an integer >= 0 (default: data.split_seed)")
    k = _classes(data)
    flips = _flip_map(data, kind, raw.get("map"), k) if kind == "asymmetric" else None
    return {"kind": kind, "rate": float(rate), "clean_val": clean_val, "seed": seed, "map": flips}


def _flip_map(data: TensorData, kind: str, given: Any, k: int) -> dict[int, int]:
    """The asymmetric map {from: to} as class indices, checked against the data's K classes."""
    if given is None:
        if data.task == "binary":
            return dict(BINARY_MAP)
        if data.name in DIGIT_DATA and k == 10:
            return dict(MNIST_MAP)
        raise _fail(
            data.name,
            "label_noise.kind",
            kind,
            f"symmetric, or asymmetric with a map of your own, data.label_noise.map={{from: to, ...}} "
            f"(class indices in [0, {k})): data={data.name} has no standard asymmetric map (only "
            f"{', '.join(DIGIT_DATA)} and binary data have one)",
        )
    if isinstance(given, str) and given == "mnist":
        given = MNIST_MAP
    pairs: list[tuple[Any, Any]]
    if isinstance(given, Mapping):
        pairs = list(given.items())
    elif isinstance(given, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in given
    ):
        pairs = [tuple(p) for p in given]  # type: ignore[misc]
    else:
        raise _fail(
            data.name,
            "label_noise.map",
            given,
            "{from: to, ...} of class indices, e.g. {2: 7, 3: 8}, or mnist",
        )
    out: dict[int, int] = {}
    for src, dst in pairs:
        try:
            a, b = int(str(src)), int(str(dst))
        except ValueError:
            a, b = -1, -1
        if not (0 <= a < k and 0 <= b < k) or a == b:
            raise _fail(
                data.name,
                "label_noise.map",
                given,
                f"pairs from: to of two different class indices in [0, {k}) (data={data.name} has {k} classes"
                + (
                    "; binary data: 0 = the negative label, 1 = the positive one"
                    if data.task == "binary"
                    else ""
                )
                + f"); {src!r}: {dst!r} is not",
            )
        out[a] = b
    if not out:
        raise _fail(data.name, "label_noise.map", given, "at least one pair from: to")
    return out


def _ratio(data: TensorData, raw: Any) -> float | None:
    if raw is None:
        return None
    ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw) and raw >= 1
    if not ok:
        raise _fail(
            data.name,
            "imbalance_ratio",
            raw,
            "a finite number >= 1 (the largest training class / the smallest; 1 keeps the split as it is)",
        )
    if raw == 1:
        return None
    _check_task(data, "imbalance_ratio", raw)
    return float(raw)


# ----------------------------------------------------------------------------- the draws


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0x4C4C, tag])


def long_tail_counts(available: list[int], ratio: float) -> list[int]:
    """n_k = round(n_max * ratio^(-k/(K-1))), n_max = the smallest class's count (so every class has them)."""
    k = len(available)
    n_max = min(available)
    return [round(n_max * ratio ** (-i / (k - 1))) for i in range(k)]


def imbalanced(data: TensorData, ratio: float, seed: int) -> TensorData:
    """The training split subsampled to the long tail (deterministic from `seed`); val and test kept."""
    k = _classes(data)
    idx = _as_index(data.y_train, data).cpu()
    available = [int((idx == c).sum()) for c in range(k)]
    if min(available) == 0:
        empty = [c for c, n in enumerate(available) if n == 0]
        raise DataConfigError(
            f"data={data.name}: data.imbalance_ratio={ratio:g} needs every class in the training split, but "
            f"class {empty[0]} has no training row; accepted: data.imbalance_ratio=1 for this split."
        )
    wanted = long_tail_counts(available, ratio)
    if min(wanted) < 1:
        empty = [c for c, n in enumerate(wanted) if n < 1]
        said = f"class {empty[0]}" if len(empty) == 1 else f"classes {', '.join(map(str, empty))}"
        raise DataConfigError(
            f"data={data.name}: data.imbalance_ratio={ratio:g} leaves {said} with no training sample "
            f"(n_k = {min(available)} x {ratio:g}^(-k/{k - 1}) rounds to 0; class counts {wanted}); "
            f"accepted: a ratio below {2 * min(available)} for this training split ({min(available)} rows "
            "in its smallest class), e.g. 10 or 100."
        )
    rng = _rng(seed, _TAG_IMBALANCE)
    keep = torch.zeros(idx.numel(), dtype=torch.bool)
    for c in range(k):
        rows = (idx == c).nonzero().reshape(-1).numpy()
        chosen = rng.permutation(rows)[: wanted[c]]
        keep[torch.from_numpy(chosen)] = True
    rows = keep.nonzero().reshape(-1)  # the split's (already shuffled) order kept
    rows = rows.to(data.y_train.device)
    realised = max(wanted) / min(wanted)
    return replace(
        data,
        x_train=data.x_train[rows],
        y_train=data.y_train[rows],
        w_train=None if data.w_train is None else data.w_train[rows],
        y_train_clean=None if data.y_train_clean is None else data.y_train_clean[rows],
        data_metrics={
            **data.data_metrics,
            "data/imbalance_ratio": realised,
            "data/n_train": float(rows.numel()),
        },
    )


def corrupt_labels(
    y: Tensor,
    num_classes: int,
    kind: str,
    rate: float,
    flips: dict[int, int] | None,
    rng: np.random.Generator,
) -> Tensor:
    """Class indices (N,) with noise: every draw made for every row, whatever `rate` is."""
    n = y.numel()
    u = rng.random(n)
    other = rng.integers(0, num_classes - 1, n)  # symmetric: one of the K - 1 other classes
    y_np = y.cpu().numpy().astype(np.int64)
    flip = u < rate
    if kind == "symmetric":
        target = other + (other >= y_np)
    else:
        assert flips is not None
        lookup = np.arange(num_classes)
        for a, b in flips.items():
            lookup[a] = b
        target = lookup[y_np]
        flip &= target != y_np
    noisy = np.where(flip, target, y_np)
    return torch.from_numpy(noisy).to(y.device)


def noisy(data: TensorData, settings: dict[str, Any]) -> TensorData:
    """Train (and val unless clean_val) corrupted; the clean labels kept; realised rates recorded."""
    k = _classes(data)
    kind, rate, seed, flips = settings["kind"], settings["rate"], settings["seed"], settings["map"]
    clean_tr = _as_index(data.y_train, data)
    noisy_tr = corrupt_labels(clean_tr, k, kind, rate, flips, _rng(seed, _TAG_TRAIN))
    metrics = dict(data.data_metrics)
    metrics["data/noise_rate"] = float((noisy_tr != clean_tr).float().mean()) if clean_tr.numel() else 0.0
    out = replace(data, y_train=_from_index(noisy_tr, data.y_train, data), y_train_clean=data.y_train)
    if not settings["clean_val"] and data.heldout:
        clean_va = _as_index(data.y_val, data)
        noisy_va = corrupt_labels(clean_va, k, kind, rate, flips, _rng(seed, _TAG_VAL))
        metrics["data/noise_rate_val"] = (
            float((noisy_va != clean_va).float().mean()) if clean_va.numel() else 0.0
        )
        out = replace(out, y_val=_from_index(noisy_va, data.y_val, data), y_val_clean=data.y_val)
    return replace(out, data_metrics=metrics)


def apply(data: TensorData, settings: Mapping[str, Any]) -> TensorData:
    """`data` with the imbalance and the label noise the settings ask for (checked first, all of them)."""
    if not settings:
        return data
    noise = _noise_settings(data, settings.get("label_noise"))
    ratio = _ratio(data, settings.get("imbalance_ratio"))
    if ratio is not None:
        raw = settings.get("label_noise") or {}
        seed = raw.get("seed") if isinstance(raw, Mapping) else None
        data = imbalanced(
            data, ratio, int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0
        )
    if noise is not None:
        data = noisy(data, noise)
    return data


# ----------------------------------------------------------------------------- class weights


def class_counts(data: TensorData) -> list[int]:
    """Rows of each class in the training split (its labels as trained on: noisy if corrupted)."""
    idx = _as_index(data.y_train, data).cpu()
    return [int((idx == c).sum()) for c in range(_classes(data))]


def inverse_frequency(counts: list[int]) -> list[float]:
    """w_k proportional to 1 / n_k, normalised to mean 1 over the classes."""
    inv = [1.0 / n for n in counts]
    mean = sum(inv) / len(inv)
    return [v / mean for v in inv]


def resolve_class_weights(loss_node: Any, data: TensorData) -> Any:
    """`loss.class_weights=inverse_frequency` made explicit (K weights from the training split's counts)."""
    if not isinstance(loss_node, DictConfig) or "class_weights" not in loss_node:
        return loss_node
    spec = loss_node.get("class_weights")
    if not isinstance(spec, str):
        return loss_node
    if spec not in CLASS_WEIGHT_SCHEMES:
        raise DataConfigError(
            f"loss.class_weights={spec!r} is not valid; accepted: null, inverse_frequency (from the training "
            "split's class counts, normalised to mean 1), or a list of K numbers > 0."
        )
    if data.task != "multiclass":
        raise DataConfigError(
            f"loss.class_weights={spec} needs multiclass data, but data={data.name} is {data.task} data; "
            "accepted: a multiclass data set (data=mnist1d, data=digits) or loss.class_weights=null."
        )
    counts = class_counts(data)
    if min(counts) == 0:
        raise DataConfigError(
            f"loss.class_weights={spec}: class {counts.index(0)} has no training row in data={data.name} "
            f"(class counts {counts}), so its inverse frequency is infinite; accepted: data with every class "
            "in its training split, or explicit weights (loss.class_weights=[...])."
        )
    node = OmegaConf.create(OmegaConf.to_container(loss_node, resolve=False))
    assert isinstance(node, DictConfig)
    node.class_weights = inverse_frequency(counts)
    if loss_node._get_parent() is not None:
        node._set_parent(loss_node._get_parent())
    return node

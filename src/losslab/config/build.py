"""From a composed config to checked objects, before any MLflow run exists.

Everything a user can get wrong (a value out of range, labels outside the loss's domain, a
model whose output does not match the targets, a `_target_` that does not import) is
caught here and said in one paragraph, so a bad config leaves no trace in the store.
Only torch and Hydra are imported: a typo fails in about two seconds.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import math
import random
import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from losslab.data import corruption
from losslab.data.checks import check_data
from losslab.data.datasets import DataConfigError, TensorData
from losslab.logs import one_line
from losslab.losses import LossBase, LossInputError, call_loss
from losslab.losses.domains import (
    LabelDomainError,
    Settled,
    check_labels,
    settle,
    split_config,
    undeclared_warning,
)
from losslab.losses.multiclass import check_class_labels
from losslab.models.dense import ModelConfigError
from losslab.outcomes.rules import OutcomeRules
from losslab.tracking.params import bad_param_key, flatten

USER_ERRORS: tuple[type[BaseException], ...] = (
    LossInputError,
    DataConfigError,
    ModelConfigError,
    LabelDomainError,
)
log = logging.getLogger("losslab.config.build")


class ConfigError(ValueError):
    """A configuration value LossLab cannot use; the message says which and what is accepted."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    tracking_mod = sys.modules.get("losslab.tracking.recorder")
    extra = (tracking_mod.TrackingError,) if tracking_mod is not None else ()
    return (ConfigError, *USER_ERRORS, *extra)


def user_error(exc: BaseException) -> BaseException | None:
    """The user-facing error inside `exc` (Hydra wraps instantiation errors), or None."""
    seen: BaseException | None = exc
    kinds = _user_error_types()
    while seen is not None:
        if isinstance(seen, kinds):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, InstantiationException):
        return exc
    return None


# ----------------------------------------------------------------------------- validation


def _number(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def validate_config(cfg: DictConfig) -> None:
    """Checks that need no object construction: optimizer, trainer, device."""
    lr = _number(cfg, "optimizer.lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr!r} is not valid; accepted: a finite number > 0 (e.g. 0.001).")
    if lr > FLOAT32_MAX:  # the optimizers step float32 tensors: lr*grad overflows inside torch
        raise ConfigError(
            f"optimizer.lr={lr!r} is not valid; accepted: a finite number > 0 and at most {FLOAT32_MAX:.3g} "
            "(the largest float32; optimizers apply lr to float32 weights), e.g. 0.001."
        )
    steps, epochs = _number(cfg, "trainer.max_steps"), _number(cfg, "trainer.max_epochs")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps == 0 or steps < -1:
        raise ConfigError(
            f"trainer.max_steps={steps!r} is not valid; accepted: an integer >= 1, "
            "or -1 to stop by max_epochs."
        )
    if steps == -1 and (not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(
            f"trainer.max_steps=-1 needs trainer.max_epochs >= 1 to end, got max_epochs={epochs!r}."
        )
    _check_tracking_and_stats(cfg)
    _check_trainer_values(cfg)
    accel = str(_number(cfg, "trainer.accelerator") or "cpu")
    if accel in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accel} but no CUDA GPU is visible to torch {torch.__version__} "
            "(torch.cuda.is_available() is False); accepted here: cpu or auto."
        )
    if accel == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator=mps but MPS is not available here; accepted here: cpu or auto."
        )


FLOAT32_MAX = 3.4028234663852886e38
#: the most steps of metrics held on the device between writes: 100000 steps of 16 metrics is 6.4 MB;
#: 10^8 (a typo's worth) allocated 1.2 GB once the run existed
MAX_FLUSH_EVERY = 100_000


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need_int(cfg: DictConfig, key: str, low: int, default: Any, extra: str = "") -> None:
    value = OmegaConf.select(cfg, key, default=default)
    if not _is_int(value) or value < low:
        raise ConfigError(f"{key}={value!r} is not valid; accepted: an integer >= {low}{extra}.")


def _check_tracking_and_stats(cfg: DictConfig) -> None:
    """Tracking and gradient-statistics settings: bad ones used to fail after the run existed."""
    flush = OmegaConf.select(cfg, "tracking.flush_every", default=256)
    if not _is_int(flush) or not 1 <= flush <= MAX_FLUSH_EVERY:
        raise ConfigError(
            f"tracking.flush_every={flush!r} is not valid; accepted: an integer in [1, {MAX_FLUSH_EVERY}] "
            "(steps of metrics buffered on the device between writes; the buffer is allocated for that "
            "many steps, so a larger value only costs memory), e.g. 256."
        )
    retry = OmegaConf.select(cfg, "tracking.retry_seconds", default=60)
    if (
        not isinstance(retry, (int, float))
        or isinstance(retry, bool)
        or not math.isfinite(retry)
        or retry < 0
    ):
        raise ConfigError(
            f"tracking.retry_seconds={retry!r} is not valid; accepted: a finite number of seconds >= 0 "
            "(how long writes are retried while the tracking store is away)."
        )
    for key, low in (("tracking.heartbeat_seconds", 0), ("tracking.stale_after", 1)):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < low
        ):
            raise ConfigError(f"{key}={value!r} is not valid; accepted: a finite number of seconds >= {low}.")
    if OmegaConf.select(cfg, "grad_stats", default=None) is not None:
        _need_int(cfg, "grad_stats.every_n_steps", 1, 1, " (record gradient statistics every N steps)")
        _need_int(cfg, "grad_stats.noise_every", 0, 0, " (0 turns the noise estimate off)")
        _need_int(cfg, "grad_stats.probe_size", 1, 32)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    reason = bad_param_key(flatten(resolved))
    if reason:
        raise ConfigError(reason)


def _check_trainer_values(cfg: DictConfig) -> None:
    """Trainer values Lightning accepts at construction but fails on later (ZeroDivisionError, ...)."""
    every = OmegaConf.select(cfg, "trainer.check_val_every_n_epoch", default=1)
    if every is not None and (not _is_int(every) or every < 1):
        raise ConfigError(
            f"trainer.check_val_every_n_epoch={every!r} is not valid; accepted: an integer >= 1 "
            "(validate every N epochs), or null to validate by trainer.val_check_interval only."
        )
    devices = OmegaConf.select(cfg, "trainer.devices", default="auto")
    ok = devices == "auto" or (_is_int(devices) and (devices >= 1 or devices == -1))
    if isinstance(devices, str) and devices != "auto":
        ok = devices.strip() == "-1" or all(p.strip().isdigit() for p in devices.split(",") if p.strip())
        ok = ok and devices.strip() not in ("", "0")
    if not ok and not OmegaConf.is_list(devices):
        raise ConfigError(
            f"trainer.devices={devices!r} is not valid; accepted: an integer >= 1 (how many devices), -1 "
            "(all), a list of device indices such as [0,1], or auto."
        )


def outcome_rules(cfg: DictConfig) -> OutcomeRules:
    """`outcome.*` keys other than the guard switch are classifier thresholds."""
    section = OmegaConf.to_container(cfg.get("outcome") or {}, resolve=True)
    assert isinstance(section, dict)
    section.pop("stop_on_divergence", None)
    try:
        return OutcomeRules.from_dict(section)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"outcome: {exc}") from None


def _instantiate(node: Any, what: str, **kwargs: Any) -> Any:
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        inner = user_error(exc.__cause__) if exc.__cause__ is not None else None
        if inner is not None and not isinstance(inner, InstantiationException):
            raise inner from None
        target = OmegaConf.select(node, "_target_", default="?") if isinstance(node, DictConfig) else "?"
        lines = [ln for ln in str(exc).strip().splitlines() if ln and not ln.startswith("full_key:")]
        detail = (lines[0] if lines else type(exc).__name__).split(", set env var HYDRA_FULL_ERROR")[0]
        if exc.__cause__ is not None and str(exc.__cause__) not in detail:
            cause = " ".join(ln.strip() for ln in str(exc.__cause__).splitlines() if ln.strip())
            detail = f"{detail} ({type(exc.__cause__).__name__}: {cause[:240]})"
        raise ConfigError(
            f"Cannot build {what} from _target_={target}: {detail}. Check the {what} options with "
            f"`python train.py --cfg job`; a user class is given as {what}._target_=package.module.Class."
        ) from None


@dataclass
class Job:
    """Everything built for one run, before any MLflow run exists."""

    data: TensorData
    model: nn.Module
    loss: nn.Module
    optimizer: Any  # partial: parameters -> torch.optim.Optimizer
    scheduler: Any | None
    rules: OutcomeRules
    #: where the loss's label domain came from: loss, config, torch docs, undeclared
    labels_from: str = "loss"


def seed_all(seed: Any) -> None:
    """Seed Python, numpy and torch (what Lightning's seed_everything does, without importing it)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r} is not valid; accepted: an integer.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(cfg: DictConfig) -> Job:
    """Seed, then build data, model, loss, optimizer; validate them together on real batches."""
    validate_config(cfg)
    threads = cfg.get("torch_threads")
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"torch_threads={threads!r} is not valid; accepted: an integer >= 1, or null.")
        torch.set_num_threads(threads)
    seed_all(cfg.seed)
    data_node, label_settings = corruption.split_data_config(cfg.data)  # label_noise, imbalance_ratio
    data: TensorData = _instantiate(data_node, "data")
    if not isinstance(data, TensorData):
        raise ConfigError(
            f"data._target_ built a {type(data).__name__}; accepted: a losslab.data.datasets.TensorData "
            "(what LossLab's data builders return)."
        )
    check_data(data)  # NaN/inf values and one-row splits fail only after the run exists otherwise
    data = corruption.apply(data, label_settings)  # train (and val) labels corrupted, train long-tailed
    model = _instantiate(cfg.model, "model", in_features=data.in_features, out_features=data.out_features)
    loss_node, declared = split_config(cfg.loss)
    loss_node = corruption.resolve_class_weights(loss_node, data)  # loss.class_weights=inverse_frequency
    loss = _instantiate(loss_node, "loss")
    if not isinstance(loss, nn.Module):
        raise ConfigError(f"loss._target_ built a {type(loss).__name__}; accepted: a torch.nn.Module.")
    settled = settle(loss, declared)
    data = for_loss(data, loss)
    optimizer = _instantiate(cfg.optimizer, "optimizer")
    scheduler = _instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    _check_compatible(data, model, loss, cfg, settled.source)
    _say_labels(settled, loss, data)
    try:  # bad optimizer/scheduler kwargs fail here, before the run exists (on a throwaway copy)
        probe = optimizer([torch.zeros(1, requires_grad=True)])
        if scheduler is not None:
            scheduler(probe)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer/scheduler options rejected: {exc}.") from None
    rules = outcome_rules(cfg)
    return Job(
        data=data,
        model=model,
        loss=loss,
        optimizer=optimizer,
        scheduler=scheduler,
        rules=rules,
        labels_from=settled.source,
    )


def _say_labels(settled: Settled, loss: nn.Module, data: TensorData) -> None:
    """A warning when binary labels go to a loss that declares no domain, or a stock loss's caveat."""
    if data.task != "binary":
        return
    if settled.domain is None:
        log.warning("%s", undeclared_warning(type(loss).__name__, data.name, data.labels))
    elif settled.note:
        log.warning("Warning: %s.", settled.note)


def for_loss(data: TensorData, loss: nn.Module) -> TensorData:
    """Binary labels given in the domain the loss declares (`domain`: 'pm1' or '01'), no flag needed.

    A loss that declares no binary domain (mse, a user's loss without `domain`) gets the
    encoding the data config names (`data.labels`). A stock torch loss or one declared with
    `loss.domain` has its domain set by `label_domains.settle` first.
    """
    domain = getattr(loss, "domain", None)
    return data.with_labels(domain) if isinstance(domain, str) else data


def _check_compatible(
    data: TensorData, model: nn.Module, loss: nn.Module, cfg: DictConfig, labels_from: str = "loss"
) -> None:
    """Labels in the loss's domain (whole dataset, once) and a real forward + loss on a small batch."""
    loss_name = str(OmegaConf.select(cfg, "loss._target_", default="loss")).rsplit(".", 1)[-1]
    check_labels(data, loss, labels_from)
    _check_signature(loss, loss_name)
    n = min(data.batch_size or data.n_train, data.n_train)  # a real batch's size; no RNG drawn
    x, y = data.x_train[:n], data.y_train[:n]
    w = None if data.w_train is None else data.w_train[:n]
    with torch.no_grad():
        try:
            y_pred = model(x)
        except RuntimeError as exc:
            raise ConfigError(
                f"the model failed on a batch of data={data.name} x{tuple(x.shape)}: {exc}"
            ) from None
        if getattr(loss, "domain", None) == "classes":
            _check_classes(data, loss, loss_name, y_pred)
    # The loss runs with autograd on, on a prediction that requires grad and is no leaf, as in training
    # (the model ran without it: no graph through the weights is needed), so a detached result shows.
    with torch.enable_grad():
        if y_pred.is_floating_point():
            y_pred = y_pred.detach().requires_grad_().clone()
        try:
            batch_loss = call_loss(probe_copy(loss), y_pred, y, w)
        except Exception as exc:  # any error of the user's loss on a real batch (IndexError, KeyError...)
            if isinstance(exc, LossInputError):
                raise
            raise ConfigError(
                f"loss {loss_name} failed on a batch of data={data.name} (y_pred {tuple(y_pred.shape)}, "
                f"y_true {tuple(y.shape)}): {type(exc).__name__}: {one_line(str(exc), limit=300)}. "
                "Accepted: a loss "
                f"called as loss(y_pred, y_true) that returns a 0-dim tensor.{_probe_hint(loss_name, exc)}"
            ) from None
    _check_loss_value(batch_loss, loss_name, y_pred.requires_grad)
    if isinstance(loss, LossBase):
        loss.check_values = False  # validated above for the whole dataset: no per-step host syncs


def probe_copy(loss: Any) -> Any:
    """The loss the probe calls: a copy, so a stateful loss (a step counter, a running statistic)
    starts training exactly as it was built; the loss itself when it cannot be copied."""
    try:
        return copy.deepcopy(loss)
    except Exception:  # a loss holding a lock, a file, a generator...
        return loss


def _check_loss_value(value: Any, loss_name: str, inputs_require_grad: bool) -> None:
    """What the loss returned on the probe batch: a 0-dim floating tensor that requires grad when the
    inputs do. Anything else fails later in LossLab's own steps or in autograd, naming neither."""
    accepted = (
        "Accepted: a 0-dim floating-point torch tensor (float16, bfloat16, float32 or float64) that requires "
        "grad when y_pred does, i.e. computed from y_pred with torch operations, reduced (e.g. .mean()), "
        "without .item(), float(), .detach(), torch.tensor(...) or an integer or complex dtype."
    )
    if not isinstance(value, torch.Tensor):
        kind = type(value)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        raise ConfigError(
            f"loss {loss_name} returned a value of type {name} ({one_line(repr(value), limit=60)}), not a "
            f"torch tensor: no gradient can reach the model. {accepted}"
        )
    what = (
        f"a torch.Tensor of dtype {value.dtype}, shape {tuple(value.shape)}, "
        f"requires_grad={value.requires_grad}"
    )
    if not value.dtype.is_floating_point:
        kind = "a complex" if value.dtype.is_complex else "an integer or boolean"
        raise ConfigError(
            f"loss {loss_name} returned {what}: {kind} loss cannot be minimised by gradient descent. "
            f"{accepted}"
        )
    if value.dim() != 0:
        raise ConfigError(
            f"loss {loss_name} returned shape {tuple(value.shape)} ({what}); accepted: a 0-dim tensor "
            "(reduce it, e.g. .mean())."
        )
    if inputs_require_grad and not value.requires_grad:
        raise ConfigError(
            f"loss {loss_name} returned {what} although y_pred requires grad: the result is detached "
            f"from y_pred, so no gradient reaches the model. {accepted}"
        )


def _check_classes(data: TensorData, loss: nn.Module, loss_name: str, logits: torch.Tensor) -> None:
    """Class-index labels against the K the model really outputs: every label of every split in [0, K),
    and K equal to the data's `num_classes`, once, before training (the steps check shapes only)."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise LossInputError(
            f"{loss_name}: the model outputs shape {tuple(logits.shape)} on data={data.name}; accepted: "
            f"(N, K) logits, one column per class (K = {data.num_classes or 'the number of classes'})."
        )
    k = int(logits.shape[1])
    if data.num_classes is not None and k != data.num_classes:
        raise LossInputError(
            f"{loss_name}: the model outputs {k} logits per row but data={data.name} has "
            f"{data.num_classes} classes; accepted: one logit per class (the shipped models take K from "
            "data.num_classes)."
        )
    for split, y in (("train", data.y_train), ("val", data.y_val), ("test", data.y_test)):
        try:
            check_class_labels(y, loss_name, k)
        except LossInputError as exc:
            raise LossInputError(f"{exc} (data={data.name}, {split} split)") from None


def _probe_hint(loss_name: str, exc: Exception) -> str:
    """A fix for the one stock loss no shipped model can feed: BCELoss needs probabilities."""
    if loss_name == "BCELoss" and "between 0 and 1" in str(exc):
        return (
            " BCELoss takes probabilities, and LossLab's models output raw scores: use "
            "loss._target_=torch.nn.BCEWithLogitsLoss (the same loss on logits) or a model ending in "
            "a sigmoid."
        )
    return ""


def _check_signature(loss: nn.Module, loss_name: str) -> None:
    """A loss of more than (y_pred, y_true) (MarginRankingLoss, CosineEmbeddingLoss) cannot be called."""
    try:
        params = inspect.signature(loss.forward).parameters.values()
    except (TypeError, ValueError):
        return
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    needed = [p.name for p in params if p.kind in positional and p.default is inspect.Parameter.empty]
    if len(needed) > 2:
        raise ConfigError(
            f"loss {loss_name} takes {len(needed)} inputs ({', '.join(needed)}); LossLab calls a loss as "
            "loss(y_pred, y_true[, weight=w]). Accepted: a loss of a prediction and a target (an "
            "argument beyond those two needs a default, e.g. weight=None)."
        )


# ----------------------------------------------------------------------------- identity


def trainer_error(exc: BaseException, cfg: DictConfig) -> ConfigError:
    """One paragraph for a Trainer Lightning refused: the bad key or value and what is accepted."""
    cause: BaseException = exc.__cause__ or exc
    text = " ".join(str(cause).split())
    unknown = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unknown:
        # Lightning (seconds to import) is loaded by a job only once its config is valid: here only
        # for the message about a trainer it refused
        import pytorch_lightning as pl

        accepted = sorted(p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self")
        close = difflib.get_close_matches(unknown.group(1), accepted, n=1)
        maybe = f" Did you mean trainer.{close[0]}?" if close else ""
        return ConfigError(
            f"trainer.{unknown.group(1)} is not an option of pytorch_lightning.Trainer; accepted: "
            f"{', '.join(accepted)}.{maybe}"
        )
    if "strategy" in text:
        from pytorch_lightning.strategies import StrategyRegistry

        value = OmegaConf.select(cfg, "trainer.strategy", default=None)
        names = ", ".join(["auto", *sorted(StrategyRegistry.available_strategies())])
        return ConfigError(f"trainer.strategy={value!r} is not valid; accepted: {names}.")
    keys = [k for k in ("devices", "precision", "accelerator", "num_nodes") if k in text]
    shown = ", ".join(f"trainer.{k}={OmegaConf.select(cfg, f'trainer.{k}', default=None)!r}" for k in keys)
    return ConfigError(
        f"Lightning refused the trainer options{f' ({shown})' if shown else ''}: {text[:400]} "
        "Accepted: the keyword arguments of pytorch_lightning.Trainer with values valid on this machine."
    )

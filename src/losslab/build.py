"""From a composed config to checked objects, before any MLflow run exists.

Everything a user can get wrong (a value out of range, labels outside the loss's domain, a
model whose output does not match the targets, a `_target_` that does not import) is
caught here and said in one paragraph, so a bad config leaves no trace in the store.
Only torch and Hydra are imported: a typo fails in about two seconds.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .data import DataConfigError, TensorData
from .losses import LossBase, LossInputError, call_loss
from .models import ModelConfigError

if TYPE_CHECKING:
    from .outcomes import OutcomeRules

USER_ERRORS: tuple[type[BaseException], ...] = (LossInputError, DataConfigError, ModelConfigError)


class ConfigError(ValueError):
    """A configuration value LossLab cannot use; the message says which and what is accepted."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    tracking_mod = sys.modules.get("losslab.tracking")
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


def outcome_rules(cfg: DictConfig) -> OutcomeRules:
    """`outcome.*` keys other than the guard switch are classifier thresholds."""
    from .outcomes import OutcomeRules

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
    data: TensorData = _instantiate(cfg.data, "data")
    model = _instantiate(cfg.model, "model", in_features=data.in_features, out_features=data.out_features)
    loss = _instantiate(cfg.loss, "loss")
    if not isinstance(loss, nn.Module):
        raise ConfigError(f"loss._target_ built a {type(loss).__name__}; accepted: a torch.nn.Module.")
    data = for_loss(data, loss)
    optimizer = _instantiate(cfg.optimizer, "optimizer")
    scheduler = _instantiate(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    _check_compatible(data, model, loss, cfg)
    try:  # bad optimizer/scheduler kwargs fail here, before the run exists (on a throwaway copy)
        probe = optimizer([torch.zeros(1, requires_grad=True)])
        if scheduler is not None:
            scheduler(probe)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer/scheduler options rejected: {exc}.") from None
    rules = outcome_rules(cfg)
    return Job(data=data, model=model, loss=loss, optimizer=optimizer, scheduler=scheduler, rules=rules)


def for_loss(data: TensorData, loss: nn.Module) -> TensorData:
    """Binary labels given in the domain the loss declares (`domain`: 'pm1' or '01'), no flag needed.

    A loss that declares no binary domain (mse, a user's loss without `domain`) gets the
    encoding the data config names (`data.labels`).
    """
    domain = getattr(loss, "domain", None)
    return data.with_labels(domain) if isinstance(domain, str) else data


def _check_compatible(data: TensorData, model: nn.Module, loss: nn.Module, cfg: DictConfig) -> None:
    """Labels in the loss's domain (whole dataset, once) and a real forward + loss on a small batch."""
    loss_name = str(OmegaConf.select(cfg, "loss._target_", default="loss")).rsplit(".", 1)[-1]
    if isinstance(loss, LossBase):
        try:
            loss.prepare_targets(data.y_train)
            loss.prepare_targets(data.y_val)
            loss.prepare_targets(data.y_test)
        except LossInputError as exc:
            raise LossInputError(_domain_hint(exc, data, loss)) from None
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
        batch_loss = call_loss(loss, y_pred, y, w)
    if batch_loss.dim() != 0:
        raise ConfigError(
            f"loss {loss_name} returned shape {tuple(batch_loss.shape)}; "
            "accepted: a 0-dim tensor (reduce it)."
        )
    if isinstance(loss, LossBase):
        loss.check_values = False  # validated above for the whole dataset: no per-step host syncs


def data_options(labels: str) -> list[str]:
    """The shipped data configs a loss with this label domain can use (`task:` in conf/data/NAME.yaml).

    Every binary set serves a {-1,+1} or a {0,1} loss (labels are re-encoded per loss, see
    `for_loss`); a real-valued loss fits the regression sets.
    """
    from . import CONF_DIR

    task = "binary" if labels in ("pm1", "01") else "regression"
    return sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if OmegaConf.load(p).get("task") == task)


def _domain_hint(exc: LossInputError, data: TensorData, loss: LossBase) -> str:
    """The loss's message plus the data option that fits; real-valued labels cannot be mapped."""
    fits = ", ".join(f"data={d}" for d in data_options(loss.domain)) or "a data set in this domain"
    if data.labels == "real" and loss.domain in ("pm1", "01"):
        from .losses.base import DOMAINS

        return (
            f"{loss.name} classifies: its labels must be in {DOMAINS[loss.domain]}, but data={data.name} "
            f"has real-valued labels (a regression set). Pick a data set with such labels: {fits}."
        )
    return f"{exc} (data={data.name} has labels '{data.labels}'; data sets that fit: {fits})"


# ----------------------------------------------------------------------------- identity

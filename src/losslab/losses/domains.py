"""Which binary labels a loss trains on, settled once before the data is encoded for it.

A label in the wrong domain does not crash: torch's BCEWithLogitsLoss on {-1, +1} targets goes
negative, accuracy stays at chance, and the run still reads `converged`. So a loss's domain
(see `losses.base.DOMAINS`) comes from, in this order:

1. its own `domain` attribute (LossLab's losses, a user's class);
2. `loss.domain` in the config (`+loss.domain=01`), for any loss: the key is taken out before the
   class is built (unless its constructor takes `domain`), and set on the built loss;
3. for the stock torch losses whose documentation states the targets' values, that value (STOCK).

A loss with none of these trains on the data's stored encoding (`data.labels`), as it always did;
on binary data, `undeclared_warning` says so in one line.

Hand-written: STOCK restates torch's loss docstrings; no library maps losses to label domains.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from torch import nn

from losslab import CONF_DIR
from losslab.data.datasets import TensorData
from losslab.losses.base import DOMAINS, LossBase, LossInputError, check_domain

#: the config key (under `loss`) that declares a loss's label domain
KEY = "domain"


class LabelDomainError(ValueError):
    """A label-domain declaration LossLab cannot use; the message says which and what is accepted."""


@dataclass(frozen=True)
class Stock:
    """What torch's documentation says about one stock loss's targets."""

    domain: str
    #: the score above which a sample is positive; None: the midpoint of the labels
    threshold: float | None
    #: printed as a warning when the loss is used (a caveat beyond the labels)
    note: str = ""


#: torch.nn losses called as loss(input, target) whose docstrings state the target values
STOCK: dict[type[nn.Module], Stock] = {
    # "the targets t[i] should be numbers between 0 and 1"; the input is a logit
    nn.BCEWithLogitsLoss: Stock("01", 0.0),
    # the same, on probabilities (the model's output must lie in [0, 1])
    nn.BCELoss: Stock("01", 0.5),
    # y[i] in {0, 1}, on logits
    nn.MultiLabelSoftMarginLoss: Stock("01", 0.0),
    # "Target: ... class indices in the range [0, C)" (or probabilities, which LossLab's data never are)
    nn.CrossEntropyLoss: Stock("classes", None),
    # "y (containing 1 or -1)"
    nn.SoftMarginLoss: Stock("pm1", 0.0),
    nn.HingeEmbeddingLoss: Stock(
        "pm1",
        None,
        "HingeEmbeddingLoss expects a distance (small for label +1), not a score: on a model's raw "
        "output it is unbounded below, and val/accuracy and val/auc read high scores as positive",
    ),
}


@dataclass(frozen=True)
class Settled:
    """A loss's label domain (None: undeclared) and where it came from: loss, config, torch docs."""

    domain: str | None
    source: str
    note: str = ""


def _takes(target: Any, key: str) -> bool:
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return key in params


def split_config(node: Any) -> tuple[Any, str | None]:
    """(the loss node to instantiate, the domain it declares or None).

    `loss.domain` is taken out of the node unless the loss's constructor takes `domain` itself
    (then it is the loss's own argument, and the built loss's `domain` attribute is what counts).
    """
    if not isinstance(node, DictConfig) or KEY not in node:
        return node, None
    declared = node.get(KEY)
    target = node.get("_target_")
    try:
        if target and _takes(get_object(str(target)), KEY):
            return node, None  # the loss's own argument; its `domain` attribute speaks for it
    except Exception:  # an unimportable target: its instantiation reports it
        pass
    content = OmegaConf.to_container(node, resolve=True)  # resolved while still inside the config
    assert isinstance(content, dict)
    content.pop(KEY)
    return OmegaConf.create(content), _checked(declared, target)


def _checked(declared: Any, target: Any) -> str:
    if declared not in DOMAINS:
        quoted = ' (quote 01 in YAML: domain: "01")' if declared == 1 else ""
        raise LabelDomainError(
            f"loss.domain={declared!r} is not valid for loss {target}; accepted: "
            + ", ".join(f"{k} ({v})" for k, v in DOMAINS.items())
            + quoted
            + "."
        )
    return str(declared)


def stock(loss: nn.Module) -> Stock | None:
    """The STOCK entry of the loss's class or its nearest stock base class."""
    for cls in type(loss).__mro__:
        if cls in STOCK:
            return STOCK[cls]
    return None


def settle(loss: nn.Module, declared: str | None) -> Settled:
    """Set `domain` (and a stock loss's `decision_threshold`) on the built loss; say where it came from."""
    name = type(loss).__name__
    own = getattr(loss, "domain", None)
    if own is not None:
        if own not in DOMAINS:
            raise LabelDomainError(
                f"loss {name} declares domain={own!r}; accepted: {', '.join(map(repr, DOMAINS))}."
            )
        if declared is not None and declared != own:
            raise LabelDomainError(
                f"loss.domain={declared} contradicts loss {name}, which declares domain={own!r} itself "
                f"({DOMAINS[own]}). Drop loss.domain: such a loss gets its labels in its own domain "
                "(data.labels=pm1|01 picks the labels a real-valued loss sees on binary data)."
            )
        return Settled(own, "loss")
    known = stock(loss)
    if declared is not None:
        loss.domain = declared
        note = ""
        if known is not None and known.domain != declared:  # allowed (the user may know better), said
            note = (
                f"loss.domain={declared} overrides what torch documents for {name}'s targets "
                f"({DOMAINS[known.domain]}); it trains on {DOMAINS[declared]}"
            )
        return Settled(declared, "config", note)
    if known is None:
        return Settled(None, "undeclared")
    loss.domain = known.domain
    if known.threshold is not None and getattr(loss, "decision_threshold", None) is None:
        loss.decision_threshold = known.threshold
    return Settled(known.domain, "torch docs", known.note)


def undeclared_warning(loss_name: str, data_name: str, labels: str) -> str:
    """One line: a loss with no domain trains on the stored binary labels; how to declare one."""
    return (
        f"Warning: loss {loss_name} declares no label domain, so on data={data_name} it trains on the "
        f"stored labels {DOMAINS.get(labels, labels)} (data.labels={labels}); declare the ones it "
        'expects with +loss.domain=01|pm1|real or a class attribute domain = "01".'
    )


def task_of_domain(domain: str) -> str:
    """The task whose data a loss of this label domain trains on: binary, multiclass or regression."""
    return {"pm1": "binary", "01": "binary", "classes": "multiclass"}.get(domain, "regression")


def data_options(labels: str) -> list[str]:
    """The shipped data configs a loss with this label domain can use (`task:` in conf/data/NAME.yaml).

    Every binary set serves a {-1,+1} or a {0,1} loss (labels are re-encoded per loss, see
    `build.for_loss`); a real-valued loss fits the regression sets, a class-index loss the multiclass ones.
    """
    task = task_of_domain(labels)
    return sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if OmegaConf.load(p).get("task") == task)


def multiclass_losses() -> list[str]:
    """The shipped loss configs whose class declares the `classes` domain (cross_entropy, gce, ...)."""
    names = []
    for path in sorted((CONF_DIR / "loss").glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_")
        try:
            if target and getattr(get_object(str(target)), "domain", None) == "classes":
                names.append(path.stem)
        except Exception:  # a config whose target does not import is not an option to offer
            continue
    return names


def check_task(data: TensorData, name: str, domain: str | None) -> None:
    """A loss and a data set of different kinds (class indices vs binary or real labels): one paragraph.

    A multiclass loss on binary or regression data, or a binary or real-valued loss on multiclass
    data (integer class indices with K logits per row), names what was given and what fits.
    """
    if not isinstance(domain, str):
        return
    if domain == "classes" and data.task != "multiclass":
        fits = ", ".join(f"data={d}" for d in data_options("classes"))
        raise LossInputError(
            f"{name} is a multiclass loss (labels: {DOMAINS['classes']}), but data={data.name} is a "
            f"{data.task} set (labels {DOMAINS.get(data.labels, data.labels)}). Accepted: multiclass data "
            f"({fits}), or a {data.task} loss for data={data.name}."
        )
    if data.task == "multiclass" and domain != "classes":
        k = data.num_classes if data.num_classes is not None else "K"
        fits = ", ".join(f"data={d}" for d in data_options(domain)) or "a data set in this domain"
        losses = ", ".join(f"loss={n}" for n in multiclass_losses())
        raise LossInputError(
            f"{name} is a {task_of_domain(domain)} loss (labels in {DOMAINS[domain]}), but data={data.name} "
            f"is a multiclass set ({k} classes: integer class indices in [0, {k}), {k} logits per row). "
            f"Accepted: a multiclass loss for data={data.name} ({losses}), or {task_of_domain(domain)} "
            f"data for {name} ({fits})."
        )


def check_labels(data: TensorData, loss: nn.Module, source: str = "loss") -> None:
    """Every label of every split in the loss's domain, or one paragraph naming the data sets that fit.

    LossLab's losses check (and map) through `prepare_targets`; any other loss with a domain (a
    stock torch loss, a user's class or `loss.domain`) is checked against it here, once, before
    training, so a wrong data set is refused instead of failing or training on nonsense.
    """
    check_task(data, getattr(loss, "name", type(loss).__name__), getattr(loss, "domain", None))
    if isinstance(loss, LossBase):
        try:
            for y in (data.y_train, data.y_val, data.y_test):
                loss.prepare_targets(y)
        except LossInputError as exc:
            raise LossInputError(domain_hint(exc, data, loss.name, loss.domain)) from None
        return
    domain = getattr(loss, "domain", None)
    if not isinstance(domain, str):
        return
    name = type(loss).__name__
    for y in (data.y_train, data.y_val, data.y_test):
        try:
            check_domain(y, domain, name)
        except LossInputError as exc:
            hint = domain_hint(exc, data, name, domain)
            if source == "torch docs":
                hint += (
                    f" (LossLab takes {name}'s domain from torch's documentation; "
                    "+loss.domain=real overrides it.)"
                )
            raise LossInputError(hint) from None


def domain_hint(exc: LossInputError, data: TensorData, name: str, domain: str) -> str:
    """The loss's message plus the data options that fit; real-valued labels cannot be mapped."""
    if domain == "classes":
        k = data.num_classes if data.num_classes is not None else "K"
        return (
            f"{exc} (data={data.name} has {k} classes; loss.num_classes, when set, must be {k}: leave it "
            "at its default, the data's num_classes)"
        )
    fits = ", ".join(f"data={d}" for d in data_options(domain)) or "a data set in this domain"
    if data.labels == "real" and domain in ("pm1", "01"):
        return (
            f"{name} classifies (label domain {domain}): its labels must be in {DOMAINS[domain]}, but "
            f"data={data.name} has real-valued labels (a regression set). Pick a data set with such "
            f"labels: {fits}."
        )
    return f"{exc} (data={data.name} has labels '{data.labels}'; data sets that fit: {fits})"

"""Hydra's basic sweeper, validating one job per config shape: what a LossLab sweep runs by default.

Before launching, Hydra's BasicSweeper composes every job's config once to catch composition errors
early, and the launcher composes each job again when it runs it. In a 16-job seed sweep the first
pass costs about 1.4 s of start-up (README "Performance"), all before the first job starts.

Jobs whose overrides differ only in the *numbers* given to plain config keys (`seed=range(16)`,
`optimizer.lr=1e-3,1e-2`, `loss.margin=0,0.5,1`) compose alike: a number cannot add or remove a
config, and a typed (structured) config accepts or rejects it by its type. So this sweeper
validates one job per shape, where the shape keeps every config-group choice, every `hydra.*`
override, every string, and the key and type of each number. Everything else (`params`,
`max_batch_size`, launching, job order) is the basic sweeper's. Hydra has no setting for how much
to validate (its source leaves that as a possible future option), hence the subclass.

LossLab's sweep callback swaps it in (`use_for`) when the config names Hydra's basic sweeper, the
default; a config group option would not do, as the primary config's `override hydra/sweeper:`
wins over a study's (`override /hydra/sweeper: optuna` would be ignored). The sweep's
multirun.yaml names the class that ran.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, read_write

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
LOSSLAB = "hydra_plugins.losslab_sweeper.sweeper.LossLabSweeper"


def override_shape(override: Override, is_group: Any) -> Hashable:
    """What of one override can change whether a job's config composes (see the module docstring)."""
    key = override.key_or_group
    value = override.value()
    plain_number = isinstance(value, (bool, int, float)) or value is None
    if (
        override.type is OverrideType.CHANGE
        and override.package is None
        and plain_number
        and not key.startswith("hydra")
        and not is_group(key)
    ):
        return (key, type(value).__name__)
    return override.input_line or f"{key}={value}"


def job_shape(parsed: Sequence[Override], is_group: Any) -> Hashable:
    """The shape of one job: its overrides' shapes, in a fixed order."""
    return tuple(sorted((override_shape(o, is_group) for o in parsed), key=repr))


def parse_lines(
    parser: OverridesParser, overrides: Sequence[str], cache: dict[str, Override]
) -> list[Override]:
    """`parser.parse_overrides(overrides)`, each distinct line parsed once (`cache`: line -> Override):
    a 90-job grid has a dozen distinct lines, and each parse costs ~5 ms (Hydra's ANTLR grammar)."""
    out = []
    for line in overrides:
        parsed = cache.get(line)
        if parsed is None:
            parsed = cache[line] = parser.parse_overrides([line])[0]
        out.append(parsed)
    return out


def distinct_shapes(
    batch: Sequence[Sequence[str]],
    parser: OverridesParser,
    is_group: Any,
    cache: dict[str, Override] | None = None,
) -> list[int]:
    """Indices of the first job of each shape in `batch`, in job order."""
    seen: set[Hashable] = set()
    firsts: list[int] = []
    cache = {} if cache is None else cache
    for i, overrides in enumerate(batch):
        parsed = parse_lines(parser, overrides, cache)
        shape = job_shape(parsed, is_group)
        if shape not in seen:
            seen.add(shape)
            firsts.append(i)
    return firsts


#: job override lists composed already in this sweep (by `validate_before_start`): not again
_validated: set[tuple[str, ...]] = set()
#: their composed configs, for the resume check (`job_configs`), which then composes none again
_composed: dict[tuple[str, ...], DictConfig] = {}
#: override line -> Hydra's parse of it, for this sweep (cleared with the two above)
_parsed: dict[str, Override] = {}


def _group_test(loader: Any) -> Any:
    repository = getattr(loader, "repository", None)

    def is_group(key: str) -> bool:
        # without the repository, treat every key as a group: validate every job, as Hydra does
        return repository is None or bool(repository.group_exists(key))

    return is_group


def _compose_shapes(loader: Any, master: DictConfig, batch: Sequence[Sequence[str]]) -> None:
    """Compose the first job of each shape in `batch`; Hydra's exception for the first that fails."""
    parser = OverridesParser.create(config_loader=loader)
    for i in distinct_shapes(batch, parser, _group_test(loader), _parsed):
        if tuple(batch[i]) in _validated:
            continue
        try:
            cfg = loader.load_sweep_config(master_config=master, sweep_overrides=list(batch[i]))
        except Exception as exc:
            exc.losslab_job = i  # type: ignore[attr-defined]  # which job: for the callback's message
            raise
        _validated.add(tuple(batch[i]))
        _composed[tuple(batch[i])] = cfg


def composed_configs() -> list[DictConfig]:
    """The configs `validate_before_start` composed for this sweep: one per config shape."""
    return list(_composed.values())


def job_configs(loader: Any, master: DictConfig, jobs: Sequence[Sequence[str]]) -> Iterator[DictConfig]:
    """Every job's composed config, in job order, composing only the first job of each shape (or
    reusing what `validate_before_start` composed): another job of that shape is the same config
    with its own numbers set as Hydra sets a plain `key=value` (`OmegaConf.update(..., merge=True)`).
    A 90-job study of 6 designs composes 6 configs, not 90 (the resume check of a sweep with nothing
    left to do). One config object per shape is updated in place: each yielded config holds until
    the next is asked for (copy it to keep it)."""
    parser = OverridesParser.create(config_loader=loader)
    is_group = _group_test(loader)
    by_shape: dict[Hashable, DictConfig] = {}
    for overrides in jobs:
        parsed = parse_lines(parser, overrides, _parsed)
        shape = job_shape(parsed, is_group)
        cfg = by_shape.get(shape)
        if cfg is None:
            cfg = _composed.get(tuple(overrides))
            if cfg is None:
                cfg = loader.load_sweep_config(master_config=master, sweep_overrides=list(overrides))
            cfg = by_shape[shape] = copy.deepcopy(cfg)  # updated in place below: keep the original
        for o in parsed:
            if isinstance(override_shape(o, is_group), tuple):  # a plain number: set it
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        yield cfg


def validate_before_start(config: DictConfig, jobs: Sequence[Sequence[str]] | None) -> str | None:
    """From the sweep callback, before the parent run exists: None when every shape composes, else
    one paragraph naming the job that cannot. Hydra's sweeper validates only after the callback has
    made the parent run, so a failure there left a KILLED parent and Hydra's raw message."""
    from hydra.core.global_hydra import GlobalHydra

    _validated.clear()  # a new sweep: what an earlier one in this process composed does not count
    _composed.clear()
    _parsed.clear()
    if not jobs or not GlobalHydra.instance().is_initialized():
        return None
    try:
        _compose_shapes(GlobalHydra.instance().config_loader(), config, jobs)
    except Exception as exc:
        number = int(getattr(exc, "losslab_job", 0))
        what = " ".join(str(exc).split()).rstrip(".")
        return (
            f"job {number} of this {len(jobs)}-job sweep ({' '.join(jobs[number]) or 'no overrides'}) cannot "
            f"be composed: {what}. A sweep starts only when the config of every job composes: nothing was "
            "run or recorded. Every value swept must fit every config-group choice it is combined with."
        )
    return None


class LossLabSweeper(BasicSweeper):
    """BasicSweeper whose pre-launch validation composes one job per config shape."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.hydra_context is not None and self.config is not None
        _compose_shapes(self.hydra_context.config_loader, self.config, batch)


def use_for(config: DictConfig) -> bool:
    """Before Hydra builds the sweeper: Hydra's basic sweeper -> this one. True when swapped."""
    if OmegaConf.select(config, "hydra.sweeper._target_", default=None) != BASIC:
        return False
    with read_write(config.hydra.sweeper):
        config.hydra.sweeper._target_ = LOSSLAB
    return True

"""Designs: runs that share every varying param but the seed, and how to name them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from losslab.report.runs import RunData

#: params that never define a design: `seed` is pooled over, and so is `data.split_seed` (it
#: defaults to the seed: runs with the same seed share their split); the rest are bookkeeping
NON_DESIGN_KEYS = ("seed", "data.split_seed", "rerun", "trainer.enable_progress_bar")
NON_DESIGN_PREFIXES = ("tracking.", "hydra.")


@dataclass
class Design:
    """Runs sharing every varying param but the seed."""

    values: dict[str, str | None]
    runs: list[RunData]
    label: str = ""


def _is_design_key(key: str) -> bool:
    return key not in NON_DESIGN_KEYS and not key.startswith(NON_DESIGN_PREFIXES)


def follows_seed(runs: Sequence[RunData], key: str) -> bool:
    """A param equal to the run's seed on every run (`data.label_noise.seed: ${seed}`): pooled with it."""
    both = [r for r in runs if key in r.params and "seed" in r.params]
    return bool(both) and all(r.params[key] == r.params["seed"] for r in both)


def varying_params(runs: Sequence[RunData]) -> list[str]:
    """Params whose value differs between runs (absent counts as a value), seed and params that follow
    the seed excluded."""
    keys = sorted({k for r in runs for k in r.params if _is_design_key(k)})
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1 and not follows_seed(runs, k)]


def _override_keys(runs: Sequence[RunData], keys: Sequence[str]) -> list[str]:
    """Params named by the runs' Hydra overrides: `optimizer.lr=0.1` names itself, a group choice
    (`loss=hinge`) names that group's `_target_` (or `name`)."""
    named: list[str] = []
    for run in runs:
        for item in run.tags.get("overrides", "").split():
            key = item.split("=", 1)[0].lstrip("+~")
            candidates = [key] if key in keys else [f"{key}._target_", f"{key}.name"]
            for cand in candidates:
                if cand in keys and cand not in named:
                    named.append(cand)
                    break
    return named


def design_params(runs: Sequence[RunData], exclude: Sequence[str] = ()) -> list[str]:
    """The varying params that define a design, without those that merely follow from them.

    In a sweep over losses, `data.name` and `loss.margin` vary too, but only because each loss
    brings its own data and knobs; grouping, heatmap axes and legends should say `loss`.
    `exclude`: keys that are not part of a design (the tuned params of `--tune`).
    Greedy: take keys in order of preference (named by the overrides, then most values, then
    `loss.*`) and keep one only if it splits the runs into more groups.
    """
    keys = [k for k in varying_params(runs) if k not in exclude]
    named = _override_keys(runs, keys)
    rest = sorted(
        (k for k in keys if k not in named),
        key=lambda k: (-len({r.params.get(k) for r in runs}), not k.startswith("loss."), k),
    )
    kept: list[str] = []
    n_groups = 1
    for key in [*named, *rest]:
        n = len({tuple(r.params.get(k) for k in [*kept, key]) for r in runs})
        if n > n_groups:
            kept.append(key)
            n_groups = n
    return sorted(kept)


def sort_key(value: str | None) -> tuple[int, float, str]:
    if value is None:
        return (0, 0.0, "")
    try:
        return (1, float(value), value)
    except ValueError:
        return (2, 0.0, value)


def show_value(key: str, value: str | None) -> str:
    if value is None:
        return "—"
    return value.rsplit(".", 1)[-1] if key.endswith("_target_") else value


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """`loss.margin` -> `margin`, `loss._target_` -> `loss`; full keys where short ones collide."""
    short = {k: (k.split(".")[-2] if k.endswith("._target_") else k.split(".")[-1]) for k in keys}
    counts = Counter(short.values())
    return {k: (s if counts[s] == 1 else k) for k, s in short.items()}


def group_designs(runs: Sequence[RunData], keys: Sequence[str]) -> list[Design]:
    groups: dict[tuple[str | None, ...], list[RunData]] = {}
    for run in runs:
        groups.setdefault(tuple(run.params.get(k) for k in keys), []).append(run)
    names = short_names(keys)
    designs = []
    for values in sorted(groups, key=lambda vs: [sort_key(v) for v in vs]):
        by_key = dict(zip(keys, values, strict=True))
        designs.append(Design(by_key, groups[values], design_label(by_key, names)))
    return designs


def design_label(values: dict[str, str | None], names: dict[str, str]) -> str:
    return ", ".join(f"{names[k]}={show_value(k, v)}" for k, v in values.items()) or "all runs"


def match_design(designs: Sequence[Design], spec: str) -> Design:
    """The one design `spec` names: its label, or `key=value` pairs (short or full keys) joined by
    commas, e.g. `margin=0.5,lr=0.01`. Raises ValueError naming the designs when not exactly one."""
    exact = [d for d in designs if d.label == spec]
    if len(exact) == 1:
        return exact[0]
    pairs = [p.strip().split("=", 1) for p in spec.split(",") if p.strip()]
    keys = list(designs[0].values) if designs else []
    names = short_names(keys)

    def fits(d: Design) -> bool:
        for pair in pairs:
            if len(pair) != 2:
                return False
            key, want = pair[0].strip(), pair[1].strip()
            full = [k for k in keys if key in (k, names[k])]
            if len(full) != 1:
                return False
            value = d.values[full[0]]
            if want not in (str(value), show_value(full[0], value)):
                return False
        return True

    found = [d for d in designs if pairs and fits(d)]
    if len(found) == 1:
        return found[0]
    shown = "; ".join(d.label for d in designs[:12]) + ("; ..." if len(designs) > 12 else "")
    what = "matches several designs" if found else "matches no design"
    raise ValueError(
        f"--baseline {spec!r} {what}. Name one design by its label or by key=value pairs joined by "
        f"commas (keys: {', '.join(names[k] for k in keys) or 'none'}). Designs: {shown}."
    )

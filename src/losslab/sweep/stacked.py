"""Which jobs of a sweep `hydra/launcher=stacked` trains together: those that differ only in `seed`.

Kept free of torch and Lightning (the launcher plugin imports this at every Hydra start); the
training itself is `losslab.train.stacked`.
"""

from __future__ import annotations

from collections.abc import Sequence

SEED_KEY = "seed"


def max_replicas_error(value: object) -> str | None:
    """One paragraph when `hydra.launcher.max_replicas` is not an integer >= 1, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return (
        f"hydra.launcher.max_replicas={value!r} is not valid; accepted: an integer >= 1, the most seeds "
        "trained together as one stacked model (e.g. hydra.launcher.max_replicas=8). Nothing was run."
    )


def design_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides without its seed: jobs with the same key differ only in `seed`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return tuple(o.input_line for o in parsed if o.get_key_element() != SEED_KEY)


def groups(job_overrides: Sequence[Sequence[str]], max_replicas: int) -> list[list[int]]:
    """Indices of the jobs trained together, in the order of each design's first job: the jobs of one
    design (equal overrides but for the seed), in chunks of at most `max_replicas`."""
    by_design: dict[tuple[str, ...], list[int]] = {}
    for i, overrides in enumerate(job_overrides):
        by_design.setdefault(design_key(overrides), []).append(i)
    out: list[list[int]] = []
    for members in by_design.values():
        out += [members[k : k + max_replicas] for k in range(0, len(members), max_replicas)]
    return out

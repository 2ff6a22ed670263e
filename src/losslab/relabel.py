"""Re-label finished runs from their stored curves, without training again.

The outcome labels are a function of the `train/loss` and `val/loss` histories (and the planned
`trainer.max_steps`), all of which MLflow keeps. When the rules change, a study's runs can be
re-labelled in place: `python -m losslab.relabel --experiment optimizer_stability` rewrites the tags
`outcome`, `outcome_reason`, `overfitting`, `overfitting_reason` and `best_val_step` (and
`first_bad_step`), and keeps the old label as `outcome_previous` the first time. `--dry-run` only
prints the changes.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from .outcome_rules import OutcomeRules
from .outcomes import classify, overfitting


def relabel_run(client: Any, run: Any, rules: OutcomeRules, dry_run: bool = False) -> tuple[str, str] | None:
    """(old, new) label of one FINISHED run, written unless `dry_run`; None when it has no train curve."""
    run_id = run.info.run_id
    train = sorted(
        ((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")), key=lambda p: p[0]
    )
    if not train:
        return None
    val = sorted(
        ((m.step, m.value) for m in client.get_metric_history(run_id, "val/loss")), key=lambda p: p[0]
    )
    planned = run.data.params.get("trainer.max_steps")
    try:
        steps = int(float(planned)) if planned is not None else None
    except ValueError:
        steps = None
    outcome = classify([v for _, v in train], rules, planned_steps=steps if steps and steps > 0 else None)
    over = overfitting(train, val, rules)
    tags = {
        "outcome": outcome.label,
        "outcome_reason": outcome.reason,
        "overfitting": str(over.flag).lower(),
        "overfitting_reason": over.reason,
    }
    if over.best_val_step is not None:
        tags["best_val_step"] = str(over.best_val_step)
    if outcome.first_bad_step is not None:
        tags["first_bad_step"] = str(train[outcome.first_bad_step][0])
    old = run.data.tags.get("outcome", "")
    if not dry_run:
        if old and "outcome_previous" not in run.data.tags:
            tags["outcome_previous"] = old
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        if outcome.first_bad_step is None and "first_bad_step" in run.data.tags:
            client.delete_tag(run_id, "first_bad_step")
    return old, outcome.label


def main(argv: list[str] | None = None) -> int:
    from . import tracking

    parser = argparse.ArgumentParser(prog="python -m losslab.relabel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="experiment name")
    parser.add_argument(
        "--uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI or the project store)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    args = parser.parse_args(argv)
    client = tracking.open_store(tracking.resolve_tracking_uri(args.uri))
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"Error: no experiment named {args.experiment!r} in this store.", file=sys.stderr)
        return 2
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=50000)
    changes: Counter[tuple[str, str]] = Counter()
    for run in runs:
        result = relabel_run(client, run, OutcomeRules(), dry_run=args.dry_run)
        if result is not None:
            changes[result] += 1
    for (old, new), count in sorted(changes.items()):
        print(f"{old or '-':>16} -> {new:<16} {count}")
    print(f"{sum(changes.values())} run(s) {'would be ' if args.dry_run else ''}relabelled")
    return 0


if __name__ == "__main__":
    sys.exit(main())

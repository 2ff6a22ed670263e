"""Re-label finished runs from their stored curves, without training again.

The outcome labels are a function of the `train/loss` and `val/loss` histories (and the planned
`trainer.max_steps`), all of which MLflow keeps. When the rules change, a study's runs can be
re-labelled in place: `python -m losslab.relabel --experiment optimizer_stability` rewrites the tags
`outcome`, `outcome_reason`, `overfitting`, `overfitting_reason` and `best_val_step` (and
`first_bad_step`), and keeps the old label as `outcome_previous` the first time. `--dry-run` only
prints the changes. Only runs whose `outcome` or `overfitting` label differs count as changed; the
others are counted as staying (their reason tags are still refreshed).

Which rules: today's defaults, plus every `outcome.NAME=VALUE` the run set on its command line (its
`overrides` tag), so a run trained with `outcome.trend_t=5` keeps that threshold and only the
defaults it did not choose move. `--stored-rules` instead applies every `outcome.*` value the run
recorded as a param: the rules exactly as it was trained with (an unchanged run keeps its labels).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, fields
from typing import Any

from losslab.outcomes.classify import classify, overfitting
from losslab.outcomes.rules import OutcomeRules
from losslab.tracking.store import open_store, resolve_tracking_uri
from losslab.vocab import TASK_METRICS, primary_metric

#: the outcome.* config keys that are classification rules (stop_on_divergence is not one)
RULE_KEYS = {f.name for f in fields(OutcomeRules)}

#: changed runs named per (old -> new) line of the printout; the rest are counted
SHOWN_RUNS = 5


@dataclass(frozen=True)
class Relabel:
    """One run's labels before and after (`overfitting` as its tag, "" where the run had none)."""

    name: str
    old: str
    new: str
    old_overfitting: str
    new_overfitting: str

    @property
    def changes(self) -> list[str]:
        """What differs, as `outcome: old -> new` lines; empty when every label stays."""
        out = []
        if self.old != self.new:
            out.append(f"outcome: {self.old or '-'} -> {self.new}")
        if self.old_overfitting != self.new_overfitting:
            out.append(f"overfitting: {self.old_overfitting or '-'} -> {self.new_overfitting}")
        return out


def rules_for(run: Any, stored: bool = False) -> tuple[OutcomeRules, dict[str, str]]:
    """The rules to re-label `run` with (module doc) and the values taken from the run itself."""
    if stored:
        pairs = list(run.data.params.items())
    else:  # `key=value` tokens of the command line; `+key=value` adds a key, same rule
        tokens = (t.lstrip("+").partition("=") for t in run.data.tags.get("overrides", "").split())
        pairs = [(key, value) for key, sep, value in tokens if sep]
    picked = {
        key.removeprefix("outcome."): value
        for key, value in pairs
        if key.startswith("outcome.") and key.removeprefix("outcome.") in RULE_KEYS
    }
    return (OutcomeRules.from_dict(picked) if picked else OutcomeRules()), picked


def relabel_run(client: Any, run: Any, rules: OutcomeRules, dry_run: bool = False) -> Relabel | None:
    """The labels of one FINISHED run before and after, written unless `dry_run`; None when it has no
    train curve."""
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
    task = run.data.tags.get("task") or run.data.params.get("data.task")
    metric = primary_metric(task) if task in TASK_METRICS else None
    metric_curve = (
        sorted(
            ((m.step, m.value) for m in client.get_metric_history(run_id, f"val/{metric}")),
            key=lambda p: p[0],
        )
        if metric
        else []
    )
    over = overfitting(train, val, rules, metric=metric, metric_curve=metric_curve)
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
    name = run.info.run_name or run_id[:8]
    before = run.data.tags.get("overfitting", "")
    return Relabel(name, old, outcome.label, before, tags["overfitting"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m losslab.relabel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="experiment name")
    parser.add_argument(
        "--uri", default=None, help="tracking URI (default: MLFLOW_TRACKING_URI or the project store)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    parser.add_argument(
        "--stored-rules",
        action="store_true",
        help="re-label each run with every outcome.* value it recorded (default: today's defaults plus the "
        "outcome.* overrides of its command line)",
    )
    args = parser.parse_args(argv)
    client = open_store(resolve_tracking_uri(args.uri))
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"Error: no experiment named {args.experiment!r} in this store.", file=sys.stderr)
        return 2
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=50000)
    results, own = [], 0
    for run in runs:
        if run.data.tags.get("losslab.sweep") == "parent":  # a sweep's parent has no curve of its own
            continue
        try:
            rules, picked = rules_for(run, stored=args.stored_rules)
        except ValueError as exc:
            print(f"Error: run {run.info.run_name or run.info.run_id}: {exc}", file=sys.stderr)
            return 2
        own += bool(picked)
        results.append(relabel_run(client, run, rules, dry_run=args.dry_run))
    print(summary([r for r in results if r is not None], skipped=results.count(None), dry_run=args.dry_run))
    where = (
        "every outcome.* value each run recorded"
        if args.stored_rules
        else ("today's defaults, with each run's own command-line outcome.* values")
    )
    print(f"rules: {where} ({own} run(s) had values of their own)")
    return 0


def summary(results: list[Relabel], skipped: int = 0, dry_run: bool = False) -> str:
    """Each real change (`outcome: converged -> diverged  3  run-a, run-b, run-c`), then how many
    runs change and how many keep their labels: a run whose label stays is not a change."""
    by_change: dict[str, list[str]] = defaultdict(list)
    for r in results:
        for change in r.changes:
            by_change[change].append(r.name)
    lines = []
    for change, names in sorted(by_change.items()):
        shown = ", ".join(names[:SHOWN_RUNS]) + (
            f", ... ({len(names) - SHOWN_RUNS} more)" if len(names) > SHOWN_RUNS else ""
        )
        lines.append(f"{change:<40} {len(names):>5}  {shown}")
    changed = sum(bool(r.changes) for r in results)
    would = "would be " if dry_run else ""
    stay = len(results) - changed
    lines.append(
        f"{changed} of {len(results)} run(s) {would}relabelled; {stay} {'would keep' if dry_run else 'kept'} "
        f"their labels" + ("" if dry_run else " (their reason tags refreshed)")
    )
    if skipped:
        lines.append(f"{skipped} FINISHED run(s) skipped: no train/loss curve")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

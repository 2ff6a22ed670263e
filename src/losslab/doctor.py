"""`python -m losslab.doctor`: find runs that can no longer end themselves and mark them KILLED.

A run whose process was killed with SIGKILL (or whose machine lost power) stays RUNNING in MLflow.
The doctor finds them (see `liveness`: same machine, the process is gone; elsewhere, no heartbeat
for `--stale-after` seconds), marks them KILLED with a `killed_reason` tag, and prints the command
that runs each config again (`--rerun` runs them). A sweep does the same before its jobs start, and
its resume then runs those configs again, since only FINISHED runs count as done.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from losslab.tracking import liveness
from losslab.tracking.liveness import STALE_AFTER
from losslab.tracking.params import redact_uri
from losslab.tracking.store import TrackingError, open_store, resolve_tracking_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m losslab.doctor", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--uri", help="tracking URI (default: MLFLOW_TRACKING_URI, else the project's mlflow.db)"
    )
    parser.add_argument("--experiment", action="append", help="experiment name (repeatable; default: all)")
    parser.add_argument(
        "--stale-after", type=float, default=STALE_AFTER, help="seconds without heartbeat (other machines)"
    )
    parser.add_argument(
        "--rerun", action="store_true", help="run the configs of the runs marked KILLED again"
    )
    args = parser.parse_args(argv)
    if not args.stale_after > 0:
        parser.error(f"--stale-after={args.stale_after} is not valid; accepted: a number of seconds > 0")

    uri = resolve_tracking_uri(args.uri)
    try:
        client = open_store(uri)
    except TrackingError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if args.experiment:
        exps = [client.get_experiment_by_name(n) for n in args.experiment]
        missing = [n for n, e in zip(args.experiment, exps, strict=True) if e is None]
        if missing:
            print(
                f"Error: no experiment named {', '.join(missing)} in {redact_uri(uri)}",
                file=sys.stderr,
            )
            return 2
        ids = [e.experiment_id for e in exps if e is not None]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    reaped = liveness.reap(client, ids, args.stale_after, by="losslab.doctor")
    print(f"doctor: {len(reaped)} stale run(s) in {redact_uri(uri)} marked KILLED")
    commands = []
    for run, reason in reaped:
        overrides = run.data.tags.get("overrides", "")
        print(f"  {run.info.run_id} {run.info.run_name}: {reason}")
        if run.data.tags.get("losslab.sweep") == "parent" or "***" in overrides:
            continue  # a sweep's parent is not a config; masked secrets cannot be replayed
        commands.append([sys.executable, "-m", "losslab", *shlex.split(overrides)])
        print(f"    run again: python train.py {overrides}")
    if args.rerun:
        failed = sum(subprocess.run(cmd, check=False).returncode != 0 for cmd in commands)
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

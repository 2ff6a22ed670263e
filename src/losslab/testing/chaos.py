"""The chaos round: signals to random workers of a parallel sweep, then a resume, then the books.

`run_chaos` starts a joblib sweep of `configs` seeds, sends `signals` signals (SIGTERM or SIGINT,
as a scheduler or a user would) to the process of a randomly chosen RUNNING job, optionally ends
with a SIGKILL of one worker (its job then fails and the sweep goes on with the rest), waits for the sweep,
then runs the same sweep again to resume it. It checks what the store must say afterwards: every
config exactly once FINISHED, nothing RUNNING, every FINISHED run with all its points. The bench's
soak section calls it; `python -m losslab.testing.chaos` runs it alone.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from losslab.tracking import liveness
from losslab.tracking.store import ensure_experiment, open_store


def _sweep_cmd(configs: int, n_jobs: int, steps: int, flush: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "losslab",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_jobs}",
        f"seed=range({configs})",
        f"trainer.max_steps={steps}",
        f"tracking.flush_every={flush}",
        "tracking.report_on_sweep_end=false",
        "tracking.log_curve_png=false",
        "-m",
    ]


def run_chaos(
    uri: str | None = None,
    workdir: str | Path | None = None,
    configs: int = 6,
    n_jobs: int = 2,
    steps: int = 600,
    signals: int = 3,
    kill9: bool = True,
    seed: int = 0,
    flush: int = 50,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """One chaos round on a fresh store (or `uri`); returns the figures and `ok`."""
    rng = random.Random(seed)
    tmp = tempfile.TemporaryDirectory(prefix="losslab-chaos-") if workdir is None else None
    cwd = Path(tmp.name if tmp is not None else workdir)  # type: ignore[arg-type]
    uri = uri or f"sqlite:///{cwd / 'chaos.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": "chaos",
        "PYTHONUNBUFFERED": "1",
    }
    client = open_store(uri)
    exp_id = ensure_experiment(client, "chaos")
    cmd = _sweep_cmd(configs, n_jobs, steps, flush)
    started = time.monotonic()
    sent: list[dict[str, Any]] = []
    log = open(cwd / "chaos-sweep.log", "w")  # noqa: SIM115 - kept open while the sweep runs
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    plan = [rng.choice((signal.SIGTERM, signal.SIGINT)) for _ in range(signals)]
    if kill9:
        plan.append(signal.SIGKILL)
    try:
        while plan and proc.poll() is None and time.monotonic() - started < timeout:
            time.sleep(rng.uniform(1.0, 4.0))
            running = [
                r
                for r in client.search_runs([exp_id], "attributes.status = 'RUNNING'")
                if "mlflow.parentRunId" in r.data.tags and r.data.tags.get(liveness.PID_TAG, "").isdigit()
            ]
            with_points = [r for r in running if client.get_metric_history(r.info.run_id, "train/loss")]
            if not with_points:
                continue
            victim = rng.choice(with_points)
            sig = plan.pop(0)
            pid = int(victim.data.tags[liveness.PID_TAG])
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                plan.insert(0, sig)
                continue
            sent.append({"signal": signal.Signals(sig).name, "pid": pid, "run": victim.info.run_name})
        first_exit = proc.wait(timeout=max(60.0, timeout - (time.monotonic() - started)))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    _wait_group_gone(proc.pid)
    resume = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    result = _books(client, exp_id, configs, steps)
    result.update(
        configs=configs,
        signals=sent,
        first_exit=first_exit,
        resume_exit=resume.returncode,
        seconds=round(time.monotonic() - started, 1),
    )
    result["ok"] = (
        resume.returncode == 0
        and result["finished_once"]
        and result["running"] == 0
        and result["complete_points"]
    )
    if not result["ok"]:
        result["resume_tail"] = (resume.stdout + resume.stderr)[-2000:]
    if tmp is not None:
        tmp.cleanup()
    return result


def _wait_group_gone(pgid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(pgid, signal.SIGKILL)  # a leftover is itself a finding: the books below will show it


def _books(client: Any, exp_id: str, configs: int, steps: int) -> dict[str, Any]:
    runs = [r for r in client.search_runs([exp_id], max_results=5000) if "mlflow.parentRunId" in r.data.tags]
    finished: dict[str, int] = {}
    incomplete = []
    for run in runs:
        if run.info.status != "FINISHED":
            continue
        seed = run.data.params.get("seed", "?")
        finished[seed] = finished.get(seed, 0) + 1
        points = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        if sorted(points) != list(range(steps)):
            incomplete.append(run.info.run_name)
    all_runs = client.search_runs([exp_id], max_results=5000)
    statuses: dict[str, int] = {}
    for run in all_runs:
        statuses[run.info.status] = statuses.get(run.info.status, 0) + 1
    return {
        "finished_once": finished == {str(i): 1 for i in range(configs)},
        "finished_per_config": finished,
        "running": statuses.get("RUNNING", 0),
        "statuses": statuses,
        "complete_points": not incomplete,
        "incomplete_runs": incomplete,
    }


if __name__ == "__main__":
    outcome = run_chaos()
    print(json.dumps(outcome, indent=1))
    sys.exit(0 if outcome["ok"] else 1)

"""Is a RUNNING run still alive? Host, process and heartbeat of every run; stale runs; config claims.

A run killed with SIGKILL (or by a power loss) cannot end itself: MLflow shows it RUNNING forever
and a resumed sweep would neither redo it nor know it is dead. Every LossLab run therefore records
where it runs (`losslab.host`, `losslab.pid`, `losslab.pid_start`: the process start time, so a
reused pid is not mistaken for the run) and refreshes `losslab.heartbeat` (unix seconds) from a
background thread. A RUNNING run is stale when, on this machine, its process is gone, or, on another
machine, its heartbeat is older than `stale_after` seconds. `reap` marks stale runs KILLED with a
`killed_reason` tag.

Claims: before a job trains, its freshly created run is compared with the other live or finished
runs of the same config hash; the earliest (start time, run id) holds the config and the others
delete their run and skip. Every store (sqlite or a server) serialises run creation, so two sweeps
on one store never train one config twice. Hand-written: MLflow has no lease or lock API.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from losslab import vocab

if TYPE_CHECKING:  # type hints only: a job's signal handling imports this before MLflow is needed
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

HOST_TAG, PID_TAG, START_TAG, HEARTBEAT_TAG = (
    "losslab.host",
    "losslab.pid",
    "losslab.pid_start",
    "losslab.heartbeat",
)
REASON_TAG = "killed_reason"
SEEN_TAG_PREFIX = "losslab.heartbeat_seen."
HASH_TAG = "losslab.config_hash"
HEARTBEAT_SECONDS = 30.0
STALE_AFTER = vocab.STALE_AFTER


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where /proc has no answer."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 counted after the command name


def identity() -> dict[str, str]:
    """Tags that say where this process runs, and a first heartbeat."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        START_TAG: process_start(pid) or "",
        HEARTBEAT_TAG: f"{time.time():.0f}",
    }


def pid_alive(pid: int, start: str | None = None) -> bool:
    """True while process `pid` exists and (when known) is the same process that started the run."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start:
        now = process_start(pid)
        return now is None or now == start
    return True


def seen_tag() -> str:
    """This observer's own note of a run's heartbeat (one tag per observing host)."""
    return SEEN_TAG_PREFIX + re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname())[:200]


def stale_reason(
    run: Run, stale_after: float = STALE_AFTER, now: float | None = None, client: MlflowClient | None = None
) -> str | None:
    """Why a RUNNING run can no longer end itself, or None while it may still be alive.

    On this machine: its process. Elsewhere: its heartbeat, without trusting the two clocks to agree
    (a host whose clock is 700 s behind writes heartbeats that look 700 s old here). The heartbeat's
    value is a token: this observer notes it with its own time (`losslab.heartbeat_seen.<host>`,
    written through `client`), and a later look finds the run dead only when the token has not changed
    for `stale_after` seconds of this observer's clock. A run that beats is alive, whatever its clock
    says; without `client` (nothing noted) a remote run is never called dead."""
    if run.info.status != "RUNNING":
        return None
    tags = run.data.tags
    now = time.time() if now is None else now
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if host == socket.gethostname() and pid and pid.isdigit():
        if pid_alive(int(pid), tags.get(START_TAG)):
            return None
        return f"its process {pid} on {host} is gone (killed or crashed without closing the run)"
    beat = tags.get(HEARTBEAT_TAG) or str(run.info.start_time)
    note = tags.get(seen_tag(), "")
    token, _, seen_at = note.rpartition(" ")
    try:
        first_seen = float(seen_at)
    except ValueError:
        token, first_seen = "", now
    if token != beat:  # first look, or it beat since the last look: alive, noted for the next look
        if client is not None:
            with contextlib.suppress(Exception):
                client.set_tag(run.info.run_id, seen_tag(), f"{beat} {now:.0f}")
        return None
    unchanged = now - first_seen
    if unchanged <= stale_after:
        return None
    where = f" from {host} (pid {pid})" if host else ""
    return (
        f"no heartbeat{where} for {unchanged:.0f}s (its heartbeat did not change between two looks "
        f"from {socket.gethostname()} {unchanged:.0f}s apart; limit {stale_after:g}s)"
    )


def reap(
    client: MlflowClient, experiment_ids: Iterable[str], stale_after: float = STALE_AFTER, by: str = "LossLab"
) -> list[tuple[Run, str]]:
    """Mark every stale RUNNING run KILLED with a `killed_reason` tag; return them with their reasons."""
    ids = list(experiment_ids)
    if not ids:
        return []
    found = []
    runs = client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=5000)
    for run in runs:
        reason = stale_reason(run, stale_after, client=client)
        if reason is None:
            continue
        with contextlib.suppress(Exception):  # another sweep may be reaping the same run
            client.set_tag(run.info.run_id, REASON_TAG, f"{reason}; marked KILLED by {by}"[:8000])
            client.set_terminated(run.info.run_id, status="KILLED")
            found.append((run, reason))
    return found


def claim(
    client: MlflowClient,
    experiment_id: str,
    run: Run,
    config_hash: str,
    finished_counts: bool = True,
    stale_after: float = STALE_AFTER,
) -> Run | None:
    """None when `run` holds its config; else the run that does (finished, or alive and earlier). A run
    made from other loss or model code (`fingerprint`) holds nothing: this one re-runs its config."""
    from losslab.tracking.fingerprint import changed

    mine = (run.info.start_time, run.info.run_id)
    others = client.search_runs(
        [experiment_id], filter_string=f"tags.`{HASH_TAG}` = '{config_hash}'", max_results=1000
    )
    holder: Run | None = None
    for other in others:
        if other.info.run_id == run.info.run_id or changed(other.data.tags, run.data.tags):
            continue
        status = other.info.status
        if status == "FINISHED" and finished_counts:
            return other
        if status != "RUNNING" or (other.info.start_time, other.info.run_id) > mine:
            continue
        if other.data.tags.get("losslab.sweep") == "parent":
            continue
        if stale_reason(other, stale_after, client=client) is not None:
            reap_one(client, other, stale_after)
            continue
        holder = other
    return holder


def reap_one(client: MlflowClient, run: Run, stale_after: float) -> None:
    reason = stale_reason(run, stale_after, client=client)
    if reason is not None:
        with contextlib.suppress(Exception):
            client.set_tag(run.info.run_id, REASON_TAG, f"{reason}; marked KILLED by LossLab")
            client.set_terminated(run.info.run_id, status="KILLED")


def revive(client: MlflowClient, run_id: str) -> None:
    """A run ending FINISHED was alive all along: drop a `killed_reason` an observer put on it."""
    with contextlib.suppress(Exception):
        tags = client.get_run(run_id).data.tags
        for key in [k for k in tags if k == REASON_TAG or k.startswith(SEEN_TAG_PREFIX)]:
            client.delete_tag(run_id, key)


class Heartbeat:
    """Refreshes a run's `losslab.heartbeat` tag every `interval` seconds from a daemon thread.

    The thread waits on an Event, so `stop` wakes it at once. `stop` does not wait for a beat that
    is being written: that write (a tag on a run that may be closing) ends on its own, and a run's
    close must not wait on the store's lock for it (3.5 s measured in one close on a GPU machine).
    """

    #: seconds `stop` waits for the thread to end before leaving it to finish its last write
    STOP_WAIT = 0.05

    def __init__(self, client: Any, run_id: str, interval: float = HEARTBEAT_SECONDS) -> None:
        self.client, self.run_id, self.interval = client, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="losslab-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a store outage: the run's own writes report it
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.0f}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.STOP_WAIT)

"""The heartbeat thread never holds up a run's close."""

from __future__ import annotations

import threading
import time

from losslab.tracking.liveness import Heartbeat


class _Client:
    """A store whose tag writes wait until released (a store held by another writer)."""

    def __init__(self, block: bool) -> None:
        self.block = block
        self.entered = threading.Event()
        self.release = threading.Event()
        self.tags: list[str] = []

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.entered.set()
        if self.block:
            self.release.wait(10)
        self.tags.append(value)


def test_stop_wakes_an_idle_heartbeat_at_once():
    client = _Client(block=False)
    beat = Heartbeat(client, "run", interval=30.0)
    started = time.perf_counter()
    beat.stop()
    assert time.perf_counter() - started < 0.3
    assert not beat._thread.is_alive() and client.tags == []


def test_stop_does_not_wait_for_a_beat_being_written():
    client = _Client(block=True)
    beat = Heartbeat(client, "run", interval=0.01)
    assert client.entered.wait(5)
    started = time.perf_counter()
    beat.stop()
    assert time.perf_counter() - started < 0.3
    client.release.set()  # the write in flight ends on its own, and no beat follows it
    beat._thread.join(5)
    assert not beat._thread.is_alive() and len(client.tags) == 1

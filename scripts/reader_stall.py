"""Does a reader holding long sqlite read transactions stall training? (issue 13, item 7)

A training-like loop (a small matmul per step, 16 metrics a step into the recorder's device buffer,
flushed every 256 steps) runs 4,000 steps into a fresh sqlite store, once alone and once while
another process holds read transactions of 3 s back to back (a reader's SHARED lock blocks a
writer's commit in sqlite's rollback-journal mode). Prints the wall time of the loop and of the
whole run (loop + close, which waits for the last writes) for both.

    PYTHONPATH=src python scripts/reader_stall.py            # this tree
    PYTHONPATH=/path/to/older/src python scripts/reader_stall.py   # compare with another version
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import torch

STEPS, METRICS, HOLD = 4000, 16, 3.0


def reader(path: str, stop: mp.Event, ready: mp.Event) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    while not stop.is_set():
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM metrics").fetchall()  # SHARED lock held until COMMIT
        ready.set()
        stop.wait(HOLD)
        con.execute("COMMIT")
        time.sleep(0.05)
    con.close()


def train(uri: str, with_reader: bool) -> tuple[float, float]:
    from losslab.tracking import recorder as tracking
    from losslab.tracking.store import ensure_experiment, open_store

    client = open_store(uri)
    exp = ensure_experiment(client, "stall")
    rec = tracking.RunRecorder.start(client, exp, f"reader={with_reader}", {}, {})
    stop, ready = mp.Event(), mp.Event()
    proc = None
    if with_reader:
        proc = mp.Process(target=reader, args=(uri.removeprefix("sqlite:///"), stop, ready))
        proc.start()
        ready.wait(30)
    names = tuple(f"m/{i}" for i in range(METRICS))
    x = torch.randn(64, 64)
    started = time.perf_counter()
    for step in range(STEPS):
        y = x @ x
        rec.buffer.record(step, names, y[0, :METRICS])
        if rec.buffer.full:
            rec.flush()
    loop = time.perf_counter() - started
    stop.set()
    rec.close()
    total = time.perf_counter() - started
    if proc is not None:
        proc.join(30)
    n = len(client.get_metric_history(rec.run_id, "m/0"))
    assert n == STEPS, f"{n} points of {STEPS}"
    return loop, total


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'stall.db'}"
        with contextlib.redirect_stdout(sys.stderr):
            alone = train(uri, False)
            held = train(uri, True)
    print(f"{STEPS} steps x {METRICS} metrics, flush every 256 steps")
    print(f"  alone:                      loop {alone[0]:6.2f} s   loop+close {alone[1]:6.2f} s")
    print(f"  reader holding {HOLD:g} s reads: loop {held[0]:6.2f} s   loop+close {held[1]:6.2f} s")


if __name__ == "__main__":
    main()

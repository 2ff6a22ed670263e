"""Count the HTTP requests one LossLab run sends to a local `mlflow server`: `python scripts/count_http.py`.

Starts a real server on 127.0.0.1 (as bench section 3 does), runs the 1000-step bench job once to warm up
and once counted, and prints each endpoint's request count and summed seconds (README "What holds each
missed target", HTTP). Counting wraps `requests.Session.request` in this process only.
"""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path

import requests
import torch

from losslab.bench.harness import compose, mlp_overrides
from losslab.bench.http_store import mlflow_server
from losslab.bench.runs import losslab_run

calls: collections.Counter[str] = collections.Counter()
seconds: collections.Counter[str] = collections.Counter()
_send = requests.Session.request


def _counted(self: requests.Session, method: str, url: str, *args: object, **kwargs: object) -> object:
    started = time.perf_counter()
    try:
        return _send(self, method, url, *args, **kwargs)
    finally:
        key = f"{method} {url.split('/api/', 1)[-1].split('?')[0]}"
        if "mlflow-artifacts" in key:
            key = f"{method} mlflow-artifacts (upload)"
        calls[key] += 1
        seconds[key] += time.perf_counter() - started


if __name__ == "__main__":
    torch.set_num_threads(1)
    requests.Session.request = _counted  # type: ignore[method-assign]
    cfg = compose(mlp_overrides([256, 256], 1000, 1))
    with mlflow_server(Path(tempfile.mkdtemp()) / "server") as uri:
        losslab_run(cfg, uri)
        calls.clear()
        seconds.clear()
        sample = losslab_run(cfg, uri)
    print(f"task.train {sample.seconds:.2f} s, trainer.fit {sample.fit_seconds:.2f} s")
    for key, n in calls.most_common():
        print(f"{n:4d} {seconds[key]:7.3f} s  {key}")
    print(f"{sum(calls.values())} requests, {sum(seconds.values()):.2f} s")
